// Command ferretdb runs FerretDB v1 for the tests and the benchmark, on its
// SQLite backend (the default) or its PostgreSQL backend.
//
// It embeds github.com/FerretDB/FerretDB/ferretdb instead of building
// cmd/ferretdb: a cmd/ferretdb built from the module proxy has no
// build/version/version.txt and panics at start-up.
//
//	ferretdb --listen-addr 127.0.0.1:27018 --sqlite-url file:data/
//	ferretdb --listen-addr 127.0.0.1:27018 --handler postgresql --postgresql-url postgres://postgres@127.0.0.1:5432/ferretdb
//
// FERRETDB_HANDLER, FERRETDB_SQLITE_URL and FERRETDB_POSTGRESQL_URL set the
// defaults of the flags of the same names.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27018", "TCP address to listen on")
	handler := flag.String("handler", env("FERRETDB_HANDLER", "sqlite"), "backend: sqlite or postgresql")
	sqlite := flag.String("sqlite-url", env("FERRETDB_SQLITE_URL", "file:data/"), "SQLite directory URI (handler sqlite)")
	pg := flag.String("postgresql-url", env("FERRETDB_POSTGRESQL_URL", ""), "PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/ferretdb (handler postgresql)")
	flag.Parse()

	conf := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listen},
		Handler:  *handler,
	}
	switch *handler {
	case "sqlite":
		conf.SQLiteURL = *sqlite
	case "postgresql":
		if *pg == "" {
			log.Fatal("--handler postgresql needs --postgresql-url (or FERRETDB_POSTGRESQL_URL)")
		}
		conf.PostgreSQLURL = *pg
	default:
		log.Fatalf("unknown --handler %q: sqlite or postgresql", *handler)
	}

	f, err := ferretdb.New(conf)
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log.Printf("ferretdb (%s) listening on %s", *handler, *listen)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}
