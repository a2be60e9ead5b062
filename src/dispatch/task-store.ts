import type { JsonObject } from "@bufbuild/protobuf";
import { LRUCache } from "lru-cache";
import type { AttemptOutcome, TaskStatus } from "../../gen/federation/v1/task_pb.js";
import type { Logger } from "../logger.js";

export interface AttemptRecord {
  readonly attempt: number;
  readonly agentId: string;
  readonly outcome: AttemptOutcome;
  readonly latencyMs: number;
  readonly detail: string;
}

export interface TaskRecord {
  readonly taskId: string;
  readonly tenant: string;
  readonly capabilities: readonly string[];
  readonly status: TaskStatus;
  readonly agentId: string;
  readonly attempts: readonly AttemptRecord[];
  readonly result: JsonObject | undefined;
  /** Bytes of the result as the agent sent it (what it costs to keep). */
  readonly resultBytes: number;
  readonly error: string;
  readonly createdAt: number;
  readonly finishedAt: number | undefined;
}

/**
 * Recent tasks for GetTask, bounded in count, bytes and age. Memory: per
 * replica, GetTask answers for tasks this replica routed. Redis
 * (redis-task-store.ts): any replica answers for any replica's tasks.
 */
export interface TaskStore {
  /** Never waits: dispatch does not slow down for the store. */
  put(task: TaskRecord): void;
  get(tenant: string, taskId: string): TaskRecord | undefined | Promise<TaskRecord | undefined>;
  close?(): Promise<void>;
}

export interface TaskRetention {
  readonly maxTasks: number;
  readonly maxBytes: number;
  /** A task is forgotten this long after its last change. */
  readonly ttlMs: number;
}

/** Fixed cost counted per task besides its result: ids, capabilities, attempts. */
const TASK_OVERHEAD_BYTES = 512;

/** What a task costs to keep, counted the same by every store. */
export function taskBytes(t: TaskRecord): number {
  return TASK_OVERHEAD_BYTES + t.resultBytes + t.attempts.length * 128;
}

/** A task too big to keep is kept without its result (GetTask says so), not dropped. */
export function keptTask(task: TaskRecord, maxBytes: number): TaskRecord {
  return taskBytes(task) > maxBytes / 4 ? { ...task, result: undefined, resultBytes: 0 } : task;
}

export class MemoryTaskStore implements TaskStore {
  private readonly tasks: LRUCache<string, TaskRecord>;

  /** `ttlMs` 0: no age limit. */
  constructor(maxTasks: number, maxBytes: number, ttlMs = 0) {
    this.tasks = new LRUCache<string, TaskRecord>({
      max: maxTasks,
      maxSize: maxBytes,
      sizeCalculation: taskBytes,
      ...(ttlMs > 0 ? { ttl: ttlMs } : {}),
    });
  }

  put(task: TaskRecord): void {
    this.tasks.set(key(task.tenant, task.taskId), keptTask(task, this.tasks.maxSize));
  }

  get(tenant: string, taskId: string): TaskRecord | undefined {
    return this.tasks.get(key(tenant, taskId));
  }
}

function key(tenant: string, taskId: string): string {
  return `${tenant}\u0000${taskId}`;
}

/** Redis when configured (every replica answers GetTask for every task), else memory. */
export async function createTaskStore(
  redis: { readonly url: string; readonly prefix: string } | undefined,
  retention: TaskRetention,
  log: Logger,
): Promise<TaskStore> {
  if (!redis) return new MemoryTaskStore(retention.maxTasks, retention.maxBytes, retention.ttlMs);
  const { RedisTaskStore } = await import("./redis-task-store.js");
  return new RedisTaskStore({ ...redis, ...retention, log });
}
