module github.com/federation-core/federation-core/examples/go-agent

go 1.26.0

require (
	github.com/federation-core/federation-core/gen/go v0.0.0-00010101000000-000000000000
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
)

// The stubs are generated into ./gen (not committed): see gen/go.mod.
replace github.com/federation-core/federation-core/gen/go => ./gen
