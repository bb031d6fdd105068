import { defineModule } from '../../src/sdk.js';

export default defineModule({
  name: 'mark',
  description: 'set one DSCP on every packet in its interest (ECN bits kept, IPv4 checksum fixed)',
  hooks: ['xdp', 'tc-ingress', 'tc-egress'],
  kernel: { object: 'mark/mark.bpf.o' },
  params: {
    dscp: { type: 'dscp', required: true, global: 'dscp', describe: 'the DSCP to set: 0-63 or a name (ef, af41, cs1, ...)' },
  },
});
