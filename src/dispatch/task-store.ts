import type { JsonObject } from "@bufbuild/protobuf";
import { LRUCache } from "lru-cache";
import type { AttemptOutcome, TaskStatus } from "../../gen/federation/v1/task_pb.js";

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
 * Recent tasks for GetTask, bounded in count and bytes. In memory, per
 * replica: GetTask answers for tasks this replica routed (a shared store in
 * Redis is left for later; see docs/architecture.md).
 */
export interface TaskStore {
  put(task: TaskRecord): void;
  get(tenant: string, taskId: string): TaskRecord | undefined;
}

/** Fixed cost counted per task besides its result: ids, capabilities, attempts. */
const TASK_OVERHEAD_BYTES = 512;

export class MemoryTaskStore implements TaskStore {
  private readonly tasks: LRUCache<string, TaskRecord>;

  constructor(maxTasks: number, maxBytes: number) {
    this.tasks = new LRUCache<string, TaskRecord>({
      max: maxTasks,
      maxSize: maxBytes,
      sizeCalculation: (t) => TASK_OVERHEAD_BYTES + t.resultBytes + t.attempts.length * 128,
    });
  }

  put(task: TaskRecord): void {
    // A task too big to keep is kept without its result (GetTask says so), not dropped.
    const size = TASK_OVERHEAD_BYTES + task.resultBytes + task.attempts.length * 128;
    const kept = size > this.tasks.maxSize / 4 ? { ...task, result: undefined, resultBytes: 0 } : task;
    this.tasks.set(key(task.tenant, task.taskId), kept);
  }

  get(tenant: string, taskId: string): TaskRecord | undefined {
    return this.tasks.get(key(tenant, taskId));
  }
}

function key(tenant: string, taskId: string): string {
  return `${tenant}\u0000${taskId}`;
}
