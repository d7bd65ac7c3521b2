/**
 * Run by the build: saves `imgflow --help` beside the compiled CLI (dist/help.txt), which the
 * installed command prints without loading the CLI, whose loading is most of that command's time.
 */
import fs from 'node:fs';
import { buildProgram } from './cli.js';

fs.writeFileSync(new URL('../help.txt', import.meta.url), buildProgram().helpInformation());
