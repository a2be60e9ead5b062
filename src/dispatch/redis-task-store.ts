import { Redis } from "ioredis";
import { ConnectError, Code } from "@connectrpc/connect";
import type { Logger } from "../logger.js";
import { keptTask, MemoryTaskStore, type TaskRecord, type TaskRetention, type TaskStore } from "./task-store.js";

export interface RedisTaskStoreOptions extends TaskRetention {
  readonly url: string;
  /** Keys `<prefix>:task:<tenant>:<id>`, index `<prefix>:tasks`, sizes `<prefix>:task-bytes`. */
  readonly prefix: string;
  readonly log: Logger;
}

/**
 * One write: the task (SET with PX = the retention's TTL), its place in the
 * age index and its size, then the oldest tasks go while there are more
 * than maxTasks or more than maxBytes; a few whose TTL ran out leave the
 * index first. Redis's own clock orders the index, so replicas' clocks do
 * not matter. The index and the sizes expire with the last task.
 */
const PUT = `
local key, index, sizes = KEYS[1], KEYS[2], KEYS[3]
local value, ttl, maxTasks, maxBytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop(k)
  local size = tonumber(redis.call('HGET', sizes, k) or '0')
  redis.call('HDEL', sizes, k)
  redis.call('HINCRBY', sizes, '', -size)
  redis.call('ZREM', index, k)
  redis.call('DEL', k)
end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl, 'LIMIT', 0, 16)) do drop(k) end
local size = string.len(value)
local old = tonumber(redis.call('HGET', sizes, key) or '0')
redis.call('SET', key, value, 'PX', ttl)
redis.call('ZADD', index, now, key)
redis.call('HSET', sizes, key, size)
local total = redis.call('HINCRBY', sizes, '', size - old)
while redis.call('ZCARD', index) > maxTasks or total > maxBytes do
  local oldest = redis.call('ZRANGE', index, 0, 0)[1]
  if not oldest or oldest == key then break end
  drop(oldest)
  total = tonumber(redis.call('HGET', sizes, '') or '0')
end
redis.call('PEXPIRE', index, ttl)
redis.call('PEXPIRE', sizes, ttl)
return total
`;

type WithPut = Redis & {
  fcPutTask(key: string, index: string, sizes: string, value: string, ttl: number, maxTasks: number, maxBytes: number): Promise<number>;
};

/**
 * Recent tasks in Redis, so GetTask answers on every replica. A put is one
 * script call that dispatch does not wait for; while Redis is unreachable
 * puts are not queued (offline queue off) but kept in a memory store of
 * this replica's tasks, which GetTask falls back to then.
 */
export class RedisTaskStore implements TaskStore {
  private readonly redis: WithPut;
  private readonly local: MemoryTaskStore;
  private readonly index: string;
  private readonly sizes: string;
  private unsaved = 0;

  constructor(private readonly opts: RedisTaskStoreOptions) {
    this.redis = new Redis(opts.url, {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      retryStrategy: (times: number) => Math.min(2_000, 50 * 2 ** Math.min(times, 6)),
      connectionName: "fc-tasks",
    }) as WithPut;
    this.redis.defineCommand("fcPutTask", { numberOfKeys: 3, lua: PUT });
    this.redis.on("error", (err: Error) => opts.log.debug({ err: err.message }, "redis error (tasks)"));
    this.local = new MemoryTaskStore(opts.maxTasks, opts.maxBytes, opts.ttlMs);
    this.index = `${opts.prefix}:tasks`;
    this.sizes = `${opts.prefix}:task-bytes`;
  }

  put(task: TaskRecord): void {
    this.local.put(task);
    const value = JSON.stringify(keptTask(task, this.opts.maxBytes));
    this.redis
      .fcPutTask(this.key(task.tenant, task.taskId), this.index, this.sizes, value, this.opts.ttlMs, this.opts.maxTasks, this.opts.maxBytes)
      .catch((err: unknown) => {
        this.unsaved++;
        this.opts.log.debug({ err: String(err), taskId: task.taskId, unsaved: this.unsaved }, "task not saved to Redis");
      });
  }

  async get(tenant: string, taskId: string): Promise<TaskRecord | undefined> {
    let text: string | null;
    try {
      text = await this.redis.get(this.key(tenant, taskId));
    } catch (err) {
      const own = this.local.get(tenant, taskId);
      if (own) return own;
      throw new ConnectError(`task store unreachable: ${String(err)}`, Code.Unavailable);
    }
    return text === null ? undefined : (JSON.parse(text) as TaskRecord);
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }

  private key(tenant: string, taskId: string): string {
    return `${this.opts.prefix}:task:${encodeURIComponent(tenant)}:${encodeURIComponent(taskId)}`;
  }
}
