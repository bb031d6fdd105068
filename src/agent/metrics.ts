// itmd's Prometheus metrics: read from the kernel's counters (and the hosts' maps) at each scrape,
// served over HTTP (itmd --metrics host:port) and through the control socket (itmctl agent metrics).
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { ItmError } from '../errors.js';
import * as registry from '../registry/index.js';

/** what the metrics say of a module's host */
export interface HostView {
  spec: { dev: string; hook: string; name: string };
  module: string;
  restarts: number;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private http?: HttpServer;

  constructor(startedAt: string, hosts: () => Iterable<HostView>) {
    this.define(startedAt, hosts);
  }

  /** the metrics now, in Prometheus's text format */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Serves /metrics over HTTP at `addr` (host:port). */
  async serve(addr: string): Promise<void> {
    const m = /^(.*):(\d+)$/.exec(addr);
    if (!m) throw new ItmError(`invalid --metrics '${addr}': use host:port`);
    this.http = createHttpServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('itmd: see /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (e: Error) => res.writeHead(500).end(`${e.message}\n`),
      );
    });
    await new Promise<void>((res, rej) => {
      this.http!.once('error', (e) => rej(new ItmError(`cannot serve metrics on ${addr}: ${e.message}`)));
      this.http!.listen(Number(m[2]), m[1]!.replace(/^\[|\]$/g, ''), () => res());
    });
  }

  close(): void {
    this.http?.close();
  }

  /** Prometheus metrics, read from the kernel's counters (and the hosts' maps) at each scrape. */
  private define(startedAt: string, hosts: () => Iterable<HostView>): void {
    const reg = this.registry;
    const labels = ['dev', 'hook', 'name', 'module'] as const;
    let snapshot: registry.DeviceView[] = [];
    const rows = () =>
      snapshot.flatMap((d) =>
        d.hooks.flatMap((h) => h.modules.map((m) => ({ d, h, m, l: { dev: d.dev, hook: h.hook, name: m.name, module: m.module } }))),
      );
    const counter = (name: string, help: string, extra: string[], fill: (set: (l: Record<string, string>, v: number) => void) => void) =>
      new Counter({
        name,
        help,
        labelNames: [...labels, ...extra],
        registers: [reg],
        collect() {
          this.reset();
          fill((l, v) => this.inc(l, v));
        },
      });
    new Gauge({
      name: 'itm_agent_up',
      help: 'itmd runs (1), with the time it started as a label',
      labelNames: ['started'],
      registers: [reg],
      collect: () => {
        // the one collector that refreshes the snapshot the others read (registry order)
        try {
          snapshot = registry.list();
        } catch {
          snapshot = [];
        }
      },
    }).set({ started: startedAt }, 1);
    counter('itm_module_seen_total', "packets that reached the module's slot", [], (set) => {
      for (const { m, l } of rows()) set(l, m.counters.seen);
    });
    counter('itm_module_matched_total', "packets that matched the module's interest", [], (set) => {
      for (const { m, l } of rows()) set(l, m.counters.matched);
    });
    counter('itm_module_dropped_total', 'packets the module dropped', [], (set) => {
      for (const { m, l } of rows()) set(l, m.counters.dropped);
    });
    counter('itm_module_errors_total', 'packets on which the module failed (they went on)', [], (set) => {
      for (const { m, l } of rows()) set(l, m.counters.errors);
    });
    counter('itm_module_class_packets_total', 'packets by the class the module gave them', ['class'], (set) => {
      for (const { m, l } of rows()) for (const [c, v] of Object.entries(m.counters.classes)) set({ ...l, class: c }, v);
    });
    counter('itm_user_diverted_total', 'packets sent to a user-space module', [], (set) => {
      for (const { m, l } of rows()) if (m.user) set(l, m.user.diverted);
    });
    counter('itm_user_bypassed_total', 'packets that went past a user-space module, by reason', ['reason'], (set) => {
      for (const { m, l } of rows()) for (const [r, v] of Object.entries(m.user?.bypassed ?? {})) set({ ...l, reason: r }, v);
    });
    new Gauge({
      name: 'itm_user_in_flight',
      help: 'packets diverted to a user-space module and not back yet',
      labelNames: [...labels],
      registers: [reg],
      collect() {
        this.reset();
        for (const { m, l } of rows()) if (m.user) this.set(l, m.user.inFlight);
      },
    });
    new Gauge({
      name: 'itm_user_serving',
      help: "1 while a user-space module's host takes packets",
      labelNames: [...labels],
      registers: [reg],
      collect() {
        this.reset();
        for (const { m, l } of rows()) if (m.user) this.set(l, m.user.serving ? 1 : 0);
      },
    });
    counter('itm_user_restarts_total', "times a user-space module's host was restarted after it died", [], (set) => {
      for (const h of hosts()) set({ dev: h.spec.dev, hook: h.spec.hook, name: h.spec.name, module: h.module }, h.restarts);
    });
    new Counter({
      name: 'itm_dispatcher_packets_total',
      help: 'packets a dispatcher saw, by what became of its parse',
      labelNames: ['dev', 'hook', 'outcome'],
      registers: [reg],
      collect() {
        this.reset();
        for (const d of snapshot)
          for (const h of d.hooks) for (const [k, v] of Object.entries(h.packets)) this.inc({ dev: d.dev, hook: h.hook, outcome: k }, v);
      },
    });
  }
}
