// A small context server for the routing-hints tests: `node context-server.mjs`.
// It listens on 127.0.0.1 (a random port, printed as "LISTENING <port>") and
// answers POST / with {"boosts": {<BOOST>: 1}}. Lines on stdin change it:
// "boost <agent-id>", "delay <ms>" (answer late), "fail" (HTTP 500), "ok".
// Every request is printed as "ASK <json body>".
import http from "node:http";
import readline from "node:readline";

let boost = process.env.BOOST ?? "";
let delayMs = 0;
let fail = false;

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === "boost") boost = arg ?? "";
  else if (cmd === "delay") delayMs = Number(arg ?? 0);
  else if (cmd === "fail") fail = true;
  else if (cmd === "ok") {
    fail = false;
    delayMs = 0;
  }
  console.log(`SET ${line.trim()}`);
});

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    console.log(`ASK ${body}`);
    setTimeout(() => {
      if (res.destroyed) return;
      if (fail) {
        res.writeHead(500).end("down");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ boosts: boost ? { [boost]: 1 } : {} }));
    }, delayMs);
  });
});
server.listen(0, "127.0.0.1", () => console.log(`LISTENING ${server.address().port}`));
