// A Federation Core agent with grpc-go: serves federation.v1.AgentService/Execute
// on its own gRPC port, registers itself with the capabilities given on the
// command line, heartbeats on its lease (keeping the renewed passport every
// answer carries), and unregisters on SIGTERM or Ctrl-C, then exits 0. Its
// work is a demo: it reverses the task's "text".
//
// Environment: FEDERATION_ADDR (host:port, default localhost:9405) and
// FEDERATION_TOKEN (a bearer token with the agents:write scope). One line per
// event on stdout ("registered", "passport renewed", "task", "unregistered");
// failures on stderr, exit status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	federationv1 "github.com/federation-core/federation-core/gen/go/federation/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	callTimeout          = 10 * time.Second // every call to the federation
	minHeartbeatInterval = 500 * time.Millisecond
	rememberedTasks      = 1000
)

// capabilities collects repeated --capability flags.
type capabilities []string

func (c *capabilities) String() string     { return strings.Join(*c, ",") }
func (c *capabilities) Set(v string) error { *c = append(*c, v); return nil }

// reverseAgent reverses payload.text. A task id seen before gets the same
// answer (dispatch may send a task again after a lost answer).
type reverseAgent struct {
	federationv1.UnimplementedAgentServiceServer
	name  string
	mu    sync.Mutex
	done  map[string]*federationv1.ExecuteResponse
	order []string
}

func (a *reverseAgent) Execute(_ context.Context, req *federationv1.ExecuteRequest) (*federationv1.ExecuteResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if answer, ok := a.done[req.GetTaskId()]; ok {
		return answer, nil
	}
	text := req.GetPayload().GetFields()["text"].GetStringValue()
	runes := []rune(text)
	for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {
		runes[i], runes[j] = runes[j], runes[i]
	}
	result, err := structpb.NewStruct(map[string]any{"reversed": string(runes), "agent": a.name, "task_id": req.GetTaskId()})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	answer := &federationv1.ExecuteResponse{Result: result}
	a.done[req.GetTaskId()] = answer
	a.order = append(a.order, req.GetTaskId())
	if len(a.order) > rememberedTasks {
		delete(a.done, a.order[0])
		a.order = a.order[1:]
	}
	fmt.Printf("task task_id=%s capabilities=%s tenant=%s\n", req.GetTaskId(), strings.Join(req.GetCapabilities(), ","), req.GetTenant())
	return answer, nil
}

// membership is the agent's registration: its id, lease and current passport.
type membership struct {
	registry          federationv1.RegistryServiceClient
	token             string
	request           *federationv1.RegisterRequest
	agentID           string
	passport          string
	passportExpiresAt time.Time
	leaseTTL          time.Duration
}

func withToken(token string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), cancel
}

func (m *membership) keep(passport string, expiresAt *timestamppb.Timestamp, leaseTTL *durationpb.Duration) {
	if passport != "" && passport != m.passport {
		renewed := m.passport != ""
		m.passport, m.passportExpiresAt = passport, expiresAt.AsTime()
		if renewed {
			fmt.Printf("passport renewed agent=%s expires_at=%s\n", m.agentID, m.passportExpiresAt.Format(time.RFC3339))
		}
	}
	m.leaseTTL = leaseTTL.AsDuration()
}

// register registers, or registers again with our id (after a lost lease or
// an expired passport), which keeps the id.
func (m *membership) register() error {
	m.request.AgentId = m.agentID
	ctx, cancel := withToken(m.token)
	defer cancel()
	answer, err := m.registry.Register(ctx, m.request)
	if err != nil {
		return err
	}
	m.agentID, m.passport = answer.GetAgent().GetId(), ""
	m.keep(answer.GetPassport(), answer.GetPassportExpiresAt(), answer.GetLeaseTtl())
	return nil
}

func (m *membership) heartbeat() error {
	ctx, cancel := withToken(m.passport)
	defer cancel()
	answer, err := m.registry.Heartbeat(ctx, &federationv1.HeartbeatRequest{AgentId: m.agentID})
	// NotFound: the lease ran out; Unauthenticated: the passport did.
	if c := status.Code(err); c == codes.NotFound || c == codes.Unauthenticated {
		fmt.Printf("re-registering agent=%s after %s\n", m.agentID, strings.ToUpper(c.String()))
		return m.register()
	}
	if err != nil {
		return err
	}
	m.keep(answer.GetPassport(), answer.GetPassportExpiresAt(), answer.GetLeaseTtl())
	return nil
}

// nextHeartbeat is a third of the lease, and soon enough that the passport
// is renewed before it expires (the federation renews it in its second half).
func (m *membership) nextHeartbeat() time.Duration {
	next := min(m.leaseTTL/3, time.Until(m.passportExpiresAt)/3)
	return max(next, minHeartbeatInterval)
}

func (m *membership) unregister() error {
	ctx, cancel := withToken(m.passport)
	defer cancel()
	_, err := m.registry.Unregister(ctx, &federationv1.UnregisterRequest{AgentId: m.agentID})
	return err
}

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "FAIL %s: %v\n", step, err)
	os.Exit(1)
}

func main() {
	var caps capabilities
	flag.Var(&caps, "capability", "a capability to register (repeatable; default text.reverse)")
	name := flag.String("name", "go-agent", "agent name")
	host := flag.String("host", "127.0.0.1", "address to serve AgentService on and to register")
	port := flag.Int("port", 0, "0 picks a free port")
	leaseTTL := flag.Duration("lease-ttl", 30*time.Second, "lease to ask for")
	flag.Parse()
	if len(caps) == 0 {
		caps = capabilities{"text.reverse"}
	}
	addr := os.Getenv("FEDERATION_ADDR")
	if addr == "" {
		addr = "localhost:9405"
	}
	token := os.Getenv("FEDERATION_TOKEN")
	if token == "" {
		fail("config", errors.New("FEDERATION_TOKEN is not set"))
	}
	stop, stopped := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stopped()

	lis, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		fail("listen", err)
	}
	server := grpc.NewServer()
	federationv1.RegisterAgentServiceServer(server, &reverseAgent{name: *name, done: map[string]*federationv1.ExecuteResponse{}})
	go server.Serve(lis) //nolint:errcheck // ends with GracefulStop

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("connect", err)
	}
	defer conn.Close()

	endpoint := "grpc://" + lis.Addr().String()
	request := &federationv1.RegisterRequest{
		Name:     *name,
		Version:  "1.0.0",
		Endpoint: &federationv1.Endpoint{Url: endpoint, Transport: federationv1.Transport_TRANSPORT_GRPC},
		LeaseTtl: durationpb.New(*leaseTTL),
	}
	for _, c := range caps {
		request.Capabilities = append(request.Capabilities, &federationv1.Capability{Name: c, Tags: []string{"go", "example"}})
	}
	me := &membership{registry: federationv1.NewRegistryServiceClient(conn), token: token, request: request}
	if err := me.register(); err != nil {
		fail("register", err)
	}
	fmt.Printf("registered agent=%s capabilities=%s endpoint=%s\n", me.agentID, caps.String(), endpoint)

	for {
		timer := time.NewTimer(me.nextHeartbeat())
		select {
		case <-stop.Done():
			timer.Stop()
			if err := me.unregister(); err != nil {
				fail("unregister", err)
			}
			fmt.Printf("unregistered agent=%s\n", me.agentID)
			// Tasks in flight finish; a client holding the connection open does not hold us.
			done := make(chan struct{})
			go func() { server.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				server.Stop()
			}
			return
		case <-timer.C:
			if err := me.heartbeat(); err != nil { // the federation may be restarting: try again
				fmt.Fprintf(os.Stderr, "heartbeat failed: %v\n", err)
			}
		}
	}
}
