/**
 * How every imgflow process reaches the Temporal frontend: the one place that turns the settings
 * (address, client TLS, bearer token) into connection options. Both the client's Connection and
 * the worker's NativeConnection take the same shape, so the CLI, workers, bridges and tests all
 * connect the same way.
 */
import fs from 'node:fs';
import type { TLSConfig } from '@temporalio/client';
import { InputError } from '../common/names.js';
import type { Config } from './config.js';

export interface ConnectionSettings {
  address: string;
  /** false: plain gRPC (the dev server). */
  tls: TLSConfig | false;
  /** Sent as `Authorization: Bearer <apiKey>` with every call. */
  apiKey?: string;
}

/** A token or PEM file is bounded: a real one is a few KiB. */
const MAX_FILE_BYTES = 64 * 1024;

function readSetting(field: string, file: string): Buffer {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch {
    throw new InputError(field, 'a readable file', file);
  }
  if (data.length === 0 || data.length > MAX_FILE_BYTES)
    throw new InputError(field, `a file of 1 to ${MAX_FILE_BYTES} bytes`, file);
  return data;
}

/** The host part of host:port, without an IPv6 address's brackets. */
function hostOf(address: string): string {
  return address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
}

/** The client TLS settings as the SDK takes them; certificate and key go together. */
function tlsOptions(tls: Config['tls'], address: string): TLSConfig | false {
  if (!tls.enabled) return false;
  if (Boolean(tls.certPath) !== Boolean(tls.keyPath)) {
    throw new InputError(
      tls.certPath ? '--tls-key-path' : '--tls-cert-path',
      'both a client certificate and its key, or neither',
    );
  }
  return {
    // An override naming the address's own host changes nothing (and an IP as TLS server name is not allowed).
    ...(tls.serverName && tls.serverName !== hostOf(address) ? { serverNameOverride: tls.serverName } : {}),
    ...(tls.caPath ? { serverRootCACertificate: readSetting('--tls-ca-path', tls.caPath) } : {}),
    ...(tls.certPath && tls.keyPath
      ? {
          clientCertPair: {
            crt: readSetting('--tls-cert-path', tls.certPath),
            key: readSetting('--tls-key-path', tls.keyPath),
          },
        }
      : {}),
  };
}

/** The token: a file wins over a literal, so a token never has to sit on a command line. */
function apiKeyOf(config: Pick<Config, 'apiKey' | 'apiKeyFile'>): string | undefined {
  if (config.apiKeyFile) {
    const token = readSetting('--api-key-file', config.apiKeyFile).toString('utf8').trim();
    // The value is never echoed: a malformed token is still a secret.
    if (!/^[A-Za-z0-9._~+/=-]+$/.test(token)) throw new InputError('--api-key-file', 'a file holding one token');
    return token;
  }
  return config.apiKey || undefined;
}

/** Options for `Connection.connect` and `NativeConnection.connect`. */
export function connectionSettings(
  config: Pick<Config, 'address' | 'tls' | 'apiKey' | 'apiKeyFile'>,
): ConnectionSettings {
  const apiKey = apiKeyOf(config);
  return { address: config.address, tls: tlsOptions(config.tls, config.address), ...(apiKey ? { apiKey } : {}) };
}
