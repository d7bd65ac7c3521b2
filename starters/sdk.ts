/**
 * The Temporal client SDK as the CLI loads it: required as the CommonJS package it is. Imported as
 * an ES module, Node first scans the package's files for their export names, some 40 ms of every
 * command that talks to the server. The classes are the same objects either way.
 */
import { createRequire } from 'node:module';
import type * as TemporalClient from '@temporalio/client';

export const sdk = createRequire(import.meta.url)('@temporalio/client') as typeof TemporalClient;
