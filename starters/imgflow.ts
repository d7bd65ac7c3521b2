/** The `imgflow` program: runs the CLI and exits with its code once output is flushed. */
import { main } from './cli.js';

const code = await main(process.argv);
// Connections and the Temporal runtime would keep the process alive after the command is done.
process.stdout.write('', () => process.exit(code));
