// node workload (protocol of wl.h): an HTTP server on 127.0.0.1:PORT, a timer counting, worker
// threads of libuv and V8 behind it. At go it checks its counter kept moving and that it can
// still answer itself over HTTP.
const fs = require("fs"),
  path = require("path"),
  http = require("http");
const [dir, port] = [process.argv[2], Number(process.argv[3])];
const put = (n, t) => {
  fs.writeFileSync(path.join(dir, n + ".tmp"), t);
  fs.renameSync(path.join(dir, n + ".tmp"), path.join(dir, n));
};
let n = 0;
setInterval(() => n++, 5);
const server = http.createServer((q, r) => r.end(`n=${n}`));
server.listen(port, "127.0.0.1", () => put("ready", `${process.pid}\n`));
const poll = setInterval(() => {
  if (!fs.existsSync(path.join(dir, "go"))) return;
  clearInterval(poll);
  const at = n;
  setTimeout(() => {
    http
      .get({ host: "127.0.0.1", port, path: "/" }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => {
          const ok = n > at && /^n=\d+$/.test(body);
          put("result", (ok ? "PASS\n" : `FAIL: counter ${at} -> ${n}, body '${body}'\n`) + `pid=${process.pid}\n`);
          process.exit(ok ? 0 : 1);
        });
      })
      .on("error", (e) => {
        put("result", `FAIL: ${e.message}\n`);
        process.exit(1);
      });
  }, 50);
}, 10);
