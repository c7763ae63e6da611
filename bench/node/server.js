// The Node anchor of the benchmark: the same endpoints as pyramid_sessup's
// demo app, written the way the original Express seed was (express 5,
// express-session, multiparty), so bench/run.py can compare side by side.
//
// Environment: PORT (required), STORE=memory|redis, REDIS_URL, UPLOAD_DIR.
"use strict";

const fs = require("fs");
const path = require("path");
const express = require("express");
const session = require("express-session");
const multiparty = require("multiparty");

const port = Number(process.env.PORT);
const storeName = process.env.STORE || "memory";
const uploadDir = process.env.UPLOAD_DIR || "./uploads";
fs.mkdirSync(uploadDir, { recursive: true });

async function makeStore() {
  if (storeName === "memory") return undefined; // express-session's MemoryStore
  if (storeName !== "redis") throw new Error(`unknown STORE ${storeName}`);
  const { createClient } = require("redis");
  const { RedisStore } = require("connect-redis");
  const client = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379/14" });
  client.on("error", (err) => console.error("redis:", err.message));
  await client.connect();
  return new RedisStore({ client, prefix: "sessup-bench-node:" });
}

async function main() {
  const app = express();
  app.disable("x-powered-by");
  // The project's static files, before the session middleware (as usual).
  app.use("/static", express.static(path.join(__dirname, "..", "..", "static"), { maxAge: 3600 * 1000 }));
  app.use(session({
    store: await makeStore(),
    secret: "bench-node-secret-0123456789abcdef",
    name: "sid",
    resave: false,
    saveUninitialized: false,
    rolling: true,
    cookie: { maxAge: 1800 * 1000, httpOnly: true, sameSite: "lax" },
  }));

  app.get("/", (req, res) => {
    res.type("html").send("<!doctype html><title>anchor</title><h1>anchor</h1>");
  });

  app.get("/session", (req, res) => {
    req.session.views = (req.session.views || 0) + 1;
    res.json({ views: req.session.views });
  });

  app.post("/upFile", (req, res) => {
    const form = new multiparty.Form({ uploadDir });
    form.parse(req, (err, fields, files) => {
      if (err) {
        res.status(err.statusCode || 400).type("text").send(String(err.message));
        return;
      }
      const saved = (files && files.inputFile) || [];
      if (!saved.length) {
        res.status(400).type("text").send("no inputFile part");
        return;
      }
      res.type("text").send(saved[0].path);
    });
  });

  app.listen(port, "127.0.0.1", () => console.log(`anchor listening on 127.0.0.1:${port} (${storeName})`));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
