// capture: writes the packets in its interest to a pcapng file, each with its class and hook, up
// to a packet and byte budget. It only looks: every packet goes on, written or not.
import { defineModule, type UserContext } from '../../src/sdk.js';
import type { Capture } from './capture.js';

const FLUSH_MS = 1000;

const captureOf = (ctx: UserContext) => ctx.state.capture as Capture;

export default defineModule({
  name: 'capture',
  description: 'write the packets in its interest to a pcapng file (class and hook per packet), within a budget',
  hooks: ['xdp', 'tc-ingress', 'tc-egress'],
  params: {
    file: { type: 'path', required: true, describe: 'the pcapng file to write (created, or emptied); relative to where itmctl runs' },
    snaplen: { type: 'int', default: 65535, min: 1, max: 65535, describe: 'the most bytes of a packet written' },
    'max-packets': {
      type: 'int',
      default: 0,
      min: 0,
      describe: 'packets to write at most (0: no limit); past it, packets go on unwritten',
    },
    'max-bytes': { type: 'int', default: 0, min: 0, describe: 'packet bytes (after snaplen) to write at most (0: no limit)' },
  },

  async start(ctx) {
    // loaded here, not with the declaration, which every itmctl command reads
    const { Capture } = await import('./capture.js');
    const p = ctx.params;
    const cap = Capture.open({
      file: p.file as string,
      name: ctx.name,
      dev: ctx.dev,
      hook: ctx.hook,
      snaplen: p.snaplen as number,
      maxPackets: p['max-packets'] as number,
      maxBytes: p['max-bytes'] as number,
      loadMark: ctx.load,
    });
    ctx.state.capture = cap;
    const timer = setInterval(() => cap.flush(), FLUSH_MS);
    timer.unref();
    ctx.state.timer = timer;
  },

  log(pkt, cls, ctx) {
    // the frame as it stands at this slot; the host has already taken off the trailer itm adds
    captureOf(ctx).add(pkt.data, cls);
  },

  stop(ctx) {
    clearInterval(ctx.state.timer as NodeJS.Timeout);
    const cap = captureOf(ctx);
    if (cap) process.stderr.write(`${new Date().toISOString()} ${cap.close()}\n`);
  },
});
