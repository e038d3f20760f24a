# workerd serving bench/workerd/worker.js with tests/fixtures/wasm/echo.wasm.
# Listens on 127.0.0.1:8787; choose another loopback port at start with
#   workerd serve config.capnp --socket-addr http=127.0.0.1:PORT
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "echo", worker = .echoWorker)],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "echo")],
);

const echoWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "echo.wasm", wasm = embed "../../tests/fixtures/wasm/echo.wasm"),
  ],
  compatibilityDate = "2024-09-23",
);
