// The generated stubs (npx buf generate --template examples/go-agent/buf.gen.yaml
// from the repository root writes federation/v1/*.pb.go here; they are not
// committed). Its path is the go_package prefix of proto/federation/v1.
module github.com/federation-core/federation-core/gen/go

go 1.26.0

require (
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)
