#!/usr/bin/env python3
"""A Federation Core client with grpcio.

Registers an agent, heartbeats with its passport, discovers and routes to it,
watches its agent.registered event, unregisters it, and checks that an unknown
method answers UNIMPLEMENTED. One line per step; exit status 1 on any failure.

Environment: FEDERATION_ADDR (host:port, default localhost:9405) and
FEDERATION_TOKEN (a bearer token with the agents:read, agents:write, route and
events:read scopes). The stubs are generated into ./gen (README, "gRPC from any
language").
"""
import os
import secrets
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import duration_pb2, struct_pb2  # noqa: E402

from federation.v1 import (  # noqa: E402
    agent_pb2,
    directory_service_pb2,
    directory_service_pb2_grpc,
    health_service_pb2,
    health_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
    router_service_pb2,
    router_service_pb2_grpc,
)

TIMEOUT = 10  # seconds, for every call


class StepFailed(Exception):
    pass


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


def describe(err):
    if isinstance(err, grpc.RpcError):
        return f"{err.code().name}: {err.details()}"
    return str(err)


def main():
    addr = os.environ.get("FEDERATION_ADDR") or "localhost:9405"
    token = os.environ.get("FEDERATION_TOKEN")
    if not token:
        raise StepFailed("config", "FEDERATION_TOKEN is not set")

    with grpc.insecure_channel(addr) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        directory = directory_service_pb2_grpc.DirectoryServiceStub(channel)
        router = router_service_pb2_grpc.RouterServiceStub(channel)
        health = health_service_pb2_grpc.HealthServiceStub(channel)
        capability = f"polyglot.python.{secrets.token_hex(6)}"
        step = "register"
        try:
            schema = struct_pb2.Struct()
            schema.update({"type": "object"})
            reg = registry.Register(
                registry_service_pb2.RegisterRequest(
                    name="python-client",
                    version="1.0.0",
                    endpoint=agent_pb2.Endpoint(url="grpc://127.0.0.1:50051", transport=agent_pb2.TRANSPORT_GRPC),
                    capabilities=[agent_pb2.Capability(name=capability, tags=["python"])],
                    tools=[agent_pb2.Tool(name="echo", description="Echoes its input", input_schema=schema)],
                    lease_ttl=duration_pb2.Duration(seconds=30),
                ),
                metadata=bearer(token),
                timeout=TIMEOUT,
            )
            agent_id = reg.agent.id
            if not agent_id or not reg.passport:
                raise StepFailed(step, f"answer without agent id or passport: {reg}")
            print(f"register ok agent={agent_id} capability={capability}", flush=True)

            step = "heartbeat"  # the passport is the bearer token
            hb = registry.Heartbeat(
                registry_service_pb2.HeartbeatRequest(agent_id=agent_id),
                metadata=bearer(reg.passport),
                timeout=TIMEOUT,
            )
            if hb.agent.id != agent_id or not hb.passport:
                raise StepFailed(step, f"unexpected answer: {hb}")
            print(f"heartbeat ok agent={agent_id} status={agent_pb2.AgentStatus.Name(hb.agent.status)}", flush=True)

            step = "discover"
            disc = directory.Discover(
                directory_service_pb2.DiscoverRequest(capabilities=[capability]),
                metadata=bearer(token),
                timeout=TIMEOUT,
            )
            if agent_id not in [a.id for a in disc.agents]:
                raise StepFailed(step, f"agent {agent_id} not among {len(disc.agents)} agents")
            print(f"discover ok agent={agent_id} agents={len(disc.agents)}", flush=True)

            step = "route"
            task = struct_pb2.Struct()
            task.update({"input": "hello"})
            route = router.Route(
                router_service_pb2.RouteRequest(capabilities=[capability], task=task),
                metadata=bearer(token),
                timeout=TIMEOUT,
            )
            if route.agent.id != agent_id:
                raise StepFailed(step, f"routed to {route.agent.id!r}, want {agent_id}")
            print(f"route ok agent={agent_id} route_id={route.route_id}", flush=True)

            # after_id present and 0: replay from the oldest held event, so
            # this agent's agent.registered event comes back.
            step = "watch"
            stream = health.WatchEvents(
                health_service_pb2.WatchEventsRequest(types=["agent.registered"], agent_id=agent_id, after_id=0),
                metadata=bearer(token),
                timeout=TIMEOUT,
            )
            try:
                for res in stream:
                    if res.event.type == "agent.registered" and res.event.agent_id == agent_id:
                        print(f"watch ok event=agent.registered agent={agent_id} id={res.event.id}", flush=True)
                        break
                else:
                    raise StepFailed(step, "stream ended before agent.registered")
            finally:
                stream.cancel()

            step = "unregister"  # with the renewed passport
            registry.Unregister(
                registry_service_pb2.UnregisterRequest(agent_id=agent_id),
                metadata=bearer(hb.passport),
                timeout=TIMEOUT,
            )
            try:
                registry.GetAgent(registry_service_pb2.GetAgentRequest(agent_id=agent_id), metadata=bearer(token), timeout=TIMEOUT)
                raise StepFailed(step, "GetAgent after Unregister still finds the agent")
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise StepFailed(step, f"GetAgent after Unregister: want NOT_FOUND, got {describe(err)}")
            print(f"unregister ok agent={agent_id}", flush=True)

            # An unknown method must answer the gRPC status UNIMPLEMENTED.
            step = "unknown-method"
            no_such = channel.unary_unary("/federation.v1.RegistryService/NoSuchMethod")  # identity (bytes) serializers
            try:
                no_such(b"", metadata=bearer(token), timeout=TIMEOUT)
                raise StepFailed(step, "want UNIMPLEMENTED, got OK")
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise StepFailed(step, f"want UNIMPLEMENTED, got {describe(err)}")
                # grpcio turns a bare HTTP 404 into UNIMPLEMENTED too; the
                # server must answer with the gRPC status itself.
                if "http2 header with status" in (err.details() or ""):
                    raise StepFailed(step, f"want a gRPC UNIMPLEMENTED status, got an HTTP error ({describe(err)})")
            print("unknown-method ok code=UNIMPLEMENTED", flush=True)
            print("all steps ok", flush=True)
        except grpc.RpcError as err:
            raise StepFailed(step, describe(err))


if __name__ == "__main__":
    try:
        main()
    except StepFailed as e:
        step, reason = e.args
        print(f"FAIL {step}: {reason}", file=sys.stderr)
        sys.exit(1)
