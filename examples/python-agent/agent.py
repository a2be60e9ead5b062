#!/usr/bin/env python3
"""A Federation Core agent with grpcio.

Serves federation.v1.AgentService/Execute on its own gRPC port, registers
itself with the capabilities given on the command line, heartbeats on its
lease (keeping the renewed passport every answer carries), and unregisters on
SIGTERM or Ctrl-C, then exits 0. Its work is a demo: it reverses the task's
"text".

Environment: FEDERATION_ADDR (host:port, default localhost:9405) and
FEDERATION_TOKEN (a bearer token with the agents:write scope). The stubs are
generated into ./gen (README.md in this folder).

One line per event on stdout: "registered", "passport renewed", "task",
"unregistered"; failures on stderr, exit status 1.
"""
import argparse
import collections
import os
import signal
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import duration_pb2, struct_pb2  # noqa: E402

from federation.v1 import (  # noqa: E402
    agent_pb2,
    agent_service_pb2,
    agent_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
)

TIMEOUT = 10  # seconds, for every call to the federation
MIN_HEARTBEAT_INTERVAL = 0.5  # seconds: never heartbeat faster than this


def log(line):
    print(line, flush=True)


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


class ReverseAgent(agent_service_pb2_grpc.AgentServiceServicer):
    """Reverses payload.text. A task id seen before gets the same answer
    (dispatch may send a task again after a lost answer)."""

    def __init__(self, name):
        self.name = name
        self.done = collections.OrderedDict()  # task id -> ExecuteResponse, the last 1000
        self.lock = threading.Lock()

    def Execute(self, request, context):
        with self.lock:
            if request.task_id in self.done:
                return self.done[request.task_id]
        text = request.payload.fields["text"].string_value if "text" in request.payload.fields else ""
        result = struct_pb2.Struct()
        result.update({"reversed": text[::-1], "agent": self.name, "task_id": request.task_id})
        answer = agent_service_pb2.ExecuteResponse(result=result)
        with self.lock:
            self.done[request.task_id] = answer
            while len(self.done) > 1000:
                self.done.popitem(last=False)
        log(f"task task_id={request.task_id} capabilities={','.join(request.capabilities)} tenant={request.tenant}")
        return answer


class Membership:
    """The agent's registration: its id, lease and current passport."""

    def __init__(self, registry, token, request):
        self.registry = registry
        self.token = token
        self.request = request
        self.agent_id = ""
        self.passport = ""
        self.passport_expires_at = 0.0  # unix seconds
        self.lease_ttl = 0.0

    def _keep(self, answer):
        if answer.passport and answer.passport != self.passport:
            renewed = bool(self.passport)
            self.passport = answer.passport
            self.passport_expires_at = answer.passport_expires_at.ToNanoseconds() / 1e9
            if renewed:
                log(f"passport renewed agent={self.agent_id} expires_at={answer.passport_expires_at.ToJsonString()}")
        self.lease_ttl = answer.lease_ttl.ToNanoseconds() / 1e9

    def register(self):
        # Registering again with our id (after a lost lease or an expired
        # passport) keeps the id.
        self.request.agent_id = self.agent_id
        answer = self.registry.Register(self.request, metadata=bearer(self.token), timeout=TIMEOUT)
        self.agent_id = answer.agent.id
        self.passport = ""
        self._keep(answer)

    def heartbeat(self):
        try:
            answer = self.registry.Heartbeat(
                registry_service_pb2.HeartbeatRequest(agent_id=self.agent_id),
                metadata=bearer(self.passport),
                timeout=TIMEOUT,
            )
        except grpc.RpcError as err:
            # NOT_FOUND: the lease ran out; UNAUTHENTICATED: the passport did.
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED):
                raise
            log(f"re-registering agent={self.agent_id} after {err.code().name}")
            self.register()
            return
        self._keep(answer)

    def next_heartbeat_in(self):
        # A third of the lease, and soon enough that the passport is renewed
        # before it expires (the federation renews it in its second half).
        passport_left = self.passport_expires_at - time.time()
        return max(MIN_HEARTBEAT_INTERVAL, min(self.lease_ttl / 3, passport_left / 3))

    def unregister(self):
        self.registry.Unregister(
            registry_service_pb2.UnregisterRequest(agent_id=self.agent_id),
            metadata=bearer(self.passport),
            timeout=TIMEOUT,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capability", action="append", help="a capability to register (repeatable; default text.reverse)")
    parser.add_argument("--name", default="python-agent")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve AgentService on and to register")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--lease-ttl", type=float, default=30, help="seconds")
    args = parser.parse_args()

    addr = os.environ.get("FEDERATION_ADDR") or "localhost:9405"
    token = os.environ.get("FEDERATION_TOKEN")
    if not token:
        print("FAIL config: FEDERATION_TOKEN is not set", file=sys.stderr)
        return 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(ReverseAgent(args.name), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()

    capabilities = args.capability or ["text.reverse"]
    seconds, frac = divmod(args.lease_ttl, 1)
    request = registry_service_pb2.RegisterRequest(
        name=args.name,
        version="1.0.0",
        endpoint=agent_pb2.Endpoint(url=f"grpc://{args.host}:{port}", transport=agent_pb2.TRANSPORT_GRPC),
        capabilities=[agent_pb2.Capability(name=c, tags=["python", "example"]) for c in capabilities],
        lease_ttl=duration_pb2.Duration(seconds=int(seconds), nanos=int(frac * 1e9)),
    )
    with grpc.insecure_channel(addr) as channel:
        me = Membership(registry_service_pb2_grpc.RegistryServiceStub(channel), token, request)
        step = "register"
        try:
            me.register()
            log(f"registered agent={me.agent_id} capabilities={','.join(capabilities)} endpoint={request.endpoint.url}")
            step = "heartbeat"
            while not stop.wait(me.next_heartbeat_in()):
                try:
                    me.heartbeat()
                except grpc.RpcError as err:  # the federation may be restarting: try again
                    print(f"heartbeat failed: {err.code().name}: {err.details()}", file=sys.stderr, flush=True)
            step = "unregister"
            me.unregister()
            log(f"unregistered agent={me.agent_id}")
        except grpc.RpcError as err:
            print(f"FAIL {step}: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        finally:
            server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
