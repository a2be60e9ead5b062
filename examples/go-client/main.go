// A Federation Core client with grpc-go: register an agent, heartbeat with its
// passport, discover, route, watch its agent.registered event, unregister,
// and check that an unknown method answers UNIMPLEMENTED.
//
// Environment: FEDERATION_ADDR (host:port, default localhost:9405) and
// FEDERATION_TOKEN (a bearer token with the agents:read, agents:write, route
// and events:read scopes). Prints one line per step; exits 1 on any failure.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	federationv1 "github.com/federation-core/federation-core/gen/go/federation/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "FAIL %s: %v\n", step, err)
	os.Exit(1)
}

func code(err error) string {
	return strings.ToUpper(status.Code(err).String())
}

// withToken returns a context carrying "authorization: Bearer <token>" and a deadline.
func withToken(token string, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), cancel
}

func main() {
	addr := os.Getenv("FEDERATION_ADDR")
	if addr == "" {
		addr = "localhost:9405"
	}
	token := os.Getenv("FEDERATION_TOKEN")
	if token == "" {
		fail("config", errors.New("FEDERATION_TOKEN is not set"))
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("connect", err)
	}
	defer conn.Close()
	registry := federationv1.NewRegistryServiceClient(conn)
	directory := federationv1.NewDirectoryServiceClient(conn)
	router := federationv1.NewRouterServiceClient(conn)
	health := federationv1.NewHealthServiceClient(conn)

	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		fail("config", err)
	}
	capability := "polyglot.go." + hex.EncodeToString(suffix)

	// Register
	schema, err := structpb.NewStruct(map[string]any{"type": "object"})
	if err != nil {
		fail("register", err)
	}
	ctx, cancel := withToken(token, 10*time.Second)
	reg, err := registry.Register(ctx, &federationv1.RegisterRequest{
		Name:         "go-client",
		Version:      "1.0.0",
		Endpoint:     &federationv1.Endpoint{Url: "grpc://127.0.0.1:50051", Transport: federationv1.Transport_TRANSPORT_GRPC},
		Capabilities: []*federationv1.Capability{{Name: capability, Tags: []string{"go"}}},
		Tools:        []*federationv1.Tool{{Name: "echo", Description: "Echoes its input", InputSchema: schema}},
		LeaseTtl:     durationpb.New(30 * time.Second),
	})
	cancel()
	if err != nil {
		fail("register", err)
	}
	agentID := reg.GetAgent().GetId()
	if agentID == "" || reg.GetPassport() == "" {
		fail("register", fmt.Errorf("answer without agent id or passport: %v", reg))
	}
	fmt.Printf("register ok agent=%s capability=%s\n", agentID, capability)

	// Heartbeat, with the passport as the bearer token
	ctx, cancel = withToken(reg.GetPassport(), 10*time.Second)
	hb, err := registry.Heartbeat(ctx, &federationv1.HeartbeatRequest{AgentId: agentID})
	cancel()
	if err != nil {
		fail("heartbeat", err)
	}
	if hb.GetAgent().GetId() != agentID || hb.GetPassport() == "" {
		fail("heartbeat", fmt.Errorf("unexpected answer: %v", hb))
	}
	fmt.Printf("heartbeat ok agent=%s status=%s\n", agentID, hb.GetAgent().GetStatus())

	// Discover
	ctx, cancel = withToken(token, 10*time.Second)
	disc, err := directory.Discover(ctx, &federationv1.DiscoverRequest{Capabilities: []string{capability}})
	cancel()
	if err != nil {
		fail("discover", err)
	}
	found := false
	for _, a := range disc.GetAgents() {
		found = found || a.GetId() == agentID
	}
	if !found {
		fail("discover", fmt.Errorf("agent %s not among %d agents", agentID, len(disc.GetAgents())))
	}
	fmt.Printf("discover ok agent=%s agents=%d\n", agentID, len(disc.GetAgents()))

	// Route
	task, err := structpb.NewStruct(map[string]any{"input": "hello"})
	if err != nil {
		fail("route", err)
	}
	ctx, cancel = withToken(token, 10*time.Second)
	route, err := router.Route(ctx, &federationv1.RouteRequest{Capabilities: []string{capability}, Task: task})
	cancel()
	if err != nil {
		fail("route", err)
	}
	if route.GetAgent().GetId() != agentID {
		fail("route", fmt.Errorf("routed to %q, want %s", route.GetAgent().GetId(), agentID))
	}
	fmt.Printf("route ok agent=%s route_id=%s\n", agentID, route.GetRouteId())

	// WatchEvents from the oldest held event (after_id present and 0), so
	// the agent.registered event of this agent is replayed.
	ctx, cancel = withToken(token, 10*time.Second)
	afterID := uint64(0)
	stream, err := health.WatchEvents(ctx, &federationv1.WatchEventsRequest{
		Types:   []string{"agent.registered"},
		AgentId: agentID,
		AfterId: &afterID,
	})
	if err != nil {
		cancel()
		fail("watch", err)
	}
	for {
		res, err := stream.Recv()
		if err == io.EOF {
			cancel()
			fail("watch", errors.New("stream ended before agent.registered"))
		}
		if err != nil {
			cancel()
			fail("watch", err)
		}
		ev := res.GetEvent()
		if ev.GetType() == "agent.registered" && ev.GetAgentId() == agentID {
			fmt.Printf("watch ok event=agent.registered agent=%s id=%d\n", agentID, ev.GetId())
			break
		}
	}
	cancel()

	// Unregister, with the renewed passport
	ctx, cancel = withToken(hb.GetPassport(), 10*time.Second)
	_, err = registry.Unregister(ctx, &federationv1.UnregisterRequest{AgentId: agentID})
	cancel()
	if err != nil {
		fail("unregister", err)
	}
	ctx, cancel = withToken(token, 10*time.Second)
	_, err = registry.GetAgent(ctx, &federationv1.GetAgentRequest{AgentId: agentID})
	cancel()
	if status.Code(err) != codes.NotFound {
		fail("unregister", fmt.Errorf("GetAgent after Unregister: want NOT_FOUND, got %s (%v)", code(err), err))
	}
	fmt.Printf("unregister ok agent=%s\n", agentID)

	// An unknown method must answer the gRPC status UNIMPLEMENTED.
	ctx, cancel = withToken(token, 10*time.Second)
	err = conn.Invoke(ctx, "/federation.v1.RegistryService/NoSuchMethod", &emptypb.Empty{}, &emptypb.Empty{})
	cancel()
	if status.Code(err) != codes.Unimplemented {
		fail("unknown-method", fmt.Errorf("want UNIMPLEMENTED, got %s (%v)", code(err), err))
	}
	// grpc-go turns a bare HTTP 404 into Unimplemented too; the server must
	// answer with the gRPC status itself.
	if strings.Contains(status.Convert(err).Message(), "HTTP status code") {
		fail("unknown-method", fmt.Errorf("want a gRPC UNIMPLEMENTED status, got an HTTP error (%v)", err))
	}
	fmt.Printf("unknown-method ok code=UNIMPLEMENTED\n")
	fmt.Println("all steps ok")
}
