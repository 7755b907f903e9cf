// The configuration of a controller run inside the test's own process: every listener on 127.0.0.1
// port 0 (tunnel, public and admin), the data in `dataDir`, and the clusters and routes from `yaml`,
// read as if it were the file `sluice.yaml`. For tests that drive the admin API of a controller they
// started with startController().
import { type ControllerConfig, loadControllerConfig } from '../../src/controller/config.js';

export function inProcessControllerConfig(
  yaml: string,
  dataDir: string,
  env: Record<string, string> = {},
): ControllerConfig {
  return loadControllerConfig({
    flags: {
      config: 'sluice.yaml',
      listen: '127.0.0.1:0',
      tunnelListen: '127.0.0.1:0',
      adminListen: '127.0.0.1:0',
      data: dataDir,
    },
    env,
    readFile: () => yaml,
  });
}
