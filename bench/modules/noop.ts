// The benchmarks' user-space module: it does nothing, so what it costs is the path and the host.
import { defineModule } from '../../src/sdk.js';

export default defineModule({
  name: 'noop',
  description: 'bench: accepts every packet unchanged',
  hooks: ['xdp', 'tc-ingress', 'tc-egress'],
  params: {},
  process: () => 'accept',
});
