#!/usr/bin/env node
// The installed `imgflow` command: runs the compiled CLI (npm run build, or npm run setup).
import { main } from '../dist/starters/cli.js';

const code = await main(process.argv);
// Connections and the Temporal runtime would keep the process alive after the command is done.
process.stdout.write('', () => process.exit(code));
