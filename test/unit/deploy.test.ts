/**
 * No container engine runs here, so the production topology is checked by structure: the services
 * a deployment needs, their images, ports and the role each worker runs.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROLES } from '../../common/queues.js';
import { SA, searchAttributeFlags } from '../../common/search-attributes.js';
import { CONNECTION_ENV } from '../../lib/config.js';
import { FRONTEND_TLS_NAME } from '../../starters/cluster/pki.js';
import { WORKER_SETTINGS } from '../../starters/cluster/site.js';

interface Service {
  image?: string;
  command?: string[] | string;
  ports?: string[];
  privileged?: boolean;
  network_mode?: string;
  devices?: string[];
  environment?: Record<string, string>;
  secrets?: string[];
  depends_on?: Record<string, unknown> | string[];
}

const compose = parse(fs.readFileSync(new URL('../../docker-compose.yml', import.meta.url), 'utf8'), {
  merge: true,
}) as { services: Record<string, Service> };
const services = compose.services;
const roleOf = (s: Service) =>
  Array.isArray(s.command) && s.command[0] === 'worker' ? s.command[s.command.indexOf('--role') + 1] : undefined;

describe('docker-compose.yml', () => {
  it('runs Temporal on PostgreSQL with the Web UI, at pinned versions', () => {
    expect(services.postgresql?.image).toMatch(/^postgres:\d+/);
    expect(services.temporal?.image).toBe('temporalio/auto-setup:1.29.1');
    expect(services.temporal?.environment?.DB).toBe('postgres12');
    expect(services.temporal?.ports).toContain('7233:7233');
    expect(services['temporal-ui']?.image).toBe('temporalio/ui:2.42.1');
    expect(services['temporal-ui']?.ports).toContain('8080:8080');
  });

  it('registers the imgflow namespace and every search attribute imgflow uses', () => {
    const setup = JSON.stringify(services['temporal-setup']?.command);
    expect(setup).toContain('namespace create -n imgflow');
    for (const flag of searchAttributeFlags()) expect(setup).toContain(flag);
    expect(Object.keys(SA).length).toBeLessThanOrEqual(10);
  });

  it('has one worker service per role, each on the imgflow image', () => {
    const roles = Object.values(services).map(roleOf).filter(Boolean);
    expect(roles.sort()).toEqual([...ROLES].sort());
    for (const s of Object.values(services).filter(roleOf)) {
      expect(s.image).toBe('imgflow:0.1.0');
      expect(s.environment?.TEMPORAL_NAMESPACE).toBe('imgflow');
    }
  });

  it('gives the NAS and compute workers the host kernel they drive', () => {
    const byRole = Object.fromEntries(Object.values(services).map((s) => [roleOf(s), s]));
    for (const role of ['nas', 'compute']) {
      expect(byRole[role]?.privileged).toBe(true);
      expect(byRole[role]?.network_mode).toBe('host');
    }
    expect(byRole.nas?.devices).toContain('/dev/zfs');
    expect(byRole.orchestrator?.privileged).toBeUndefined();
    expect(byRole.cloud?.privileged).toBeUndefined();
  });

  it('gives every imgflow service the one payload keyring as a secret, and the Web UI the codec server', () => {
    // Every imgflow service that talks to Temporal; temporal-keys only serves the token key set.
    const imgflowServices = Object.entries(services)
      .filter(([name, s]) => s.image === 'imgflow:0.1.0' && name !== 'temporal-keys')
      .map(([, s]) => s);
    expect(imgflowServices.length).toBeGreaterThan(ROLES.length);
    for (const s of imgflowServices) {
      expect(s.environment?.IMGFLOW_CODEC_KEYS).toBe('/run/secrets/imgflow-codec-keys');
      expect(s.secrets).toContain('imgflow-codec-keys');
    }
    const codec = services['codec-server']!;
    expect(codec.command).toEqual(expect.arrayContaining(['codec-server', '--jwks', '/run/secrets/imgflow-jwks']));
    const port = codec.ports?.[0]?.split(':')[0];
    expect(services['temporal-ui']?.environment?.TEMPORAL_CODEC_ENDPOINT).toBe(`http://localhost:${port}`);
    expect(services['temporal-ui']?.environment?.TEMPORAL_CODEC_PASS_ACCESS_TOKEN).toBe('true');
  });

  it('puts the frontend behind mutual TLS and tokens, as `imgflow cluster up` does', () => {
    const env = services.temporal?.environment ?? {};
    expect(env.TEMPORAL_TLS_REQUIRE_CLIENT_AUTH).toBe('true');
    expect(env.TEMPORAL_TLS_CLIENT1_CA_CERT).toMatch(/ca\.pem$/);
    expect(env.TEMPORAL_TLS_SERVER_CA_CERT).toMatch(/internode-ca\.pem$/);
    expect(env.TEMPORAL_AUTH_AUTHORIZER).toBe('default');
    expect(env.TEMPORAL_AUTH_CLAIM_MAPPER).toBe('default');
    expect(env.TEMPORAL_JWT_KEY_SOURCE1).toMatch(/^http:\/\/temporal-keys:\d+\/jwks\.json$/);
    expect(env.USE_INTERNAL_FRONTEND).toBe('true');
    expect(services['temporal-ui']?.environment?.TEMPORAL_TLS_CERT).toBeTruthy();
  });

  it('connects every worker with the settings `cluster up --compute` gives its hosts: certificate, CA, server name, token file, keyring', () => {
    for (const s of Object.values(services).filter(roleOf)) {
      for (const name of WORKER_SETTINGS) expect(s.environment?.[name], name).toBeTruthy();
      expect(s.environment?.[CONNECTION_ENV.serverName]).toBe(FRONTEND_TLS_NAME);
      expect(s.environment?.[CONNECTION_ENV.apiKey]).toBeUndefined();
    }
    // Every client of the frontend checks it by the name in the certificate `cluster up` makes.
    for (const name of ['temporal-setup', 'temporal-ui']) {
      const env = services[name]?.environment ?? {};
      expect(env.TEMPORAL_TLS_SERVER_NAME, name).toBe(FRONTEND_TLS_NAME);
    }
  });

  it('keeps secrets out of the file: the database password comes from a secret file', () => {
    const text = fs.readFileSync(new URL('../../docker-compose.yml', import.meta.url), 'utf8');
    expect(text).not.toMatch(/PASSWORD:\s*\S/);
    expect(services.postgresql?.environment?.POSTGRES_PASSWORD_FILE).toBe('/run/secrets/postgres-password');
  });
});

describe('deploy/imgflow-worker@.service', () => {
  const unit = fs.readFileSync(new URL('../../deploy/imgflow-worker@.service', import.meta.url), 'utf8');

  it('gives the worker the settings `cluster up --compute` gives its hosts, never a token itself', () => {
    const e = CONNECTION_ENV;
    for (const name of [e.certPath, e.keyPath, e.caPath, e.apiKeyFile])
      expect(unit).toMatch(new RegExp(`^Environment=${name}=/etc/imgflow/tls/`, 'm'));
    for (const name of WORKER_SETTINGS) expect(unit).toMatch(new RegExp(`^Environment=${name}=\\S`, 'm'));
    expect(unit).toMatch(new RegExp(`^Environment=${e.serverName}=${FRONTEND_TLS_NAME}$`, 'm'));
    expect(unit).not.toMatch(new RegExp(`^Environment=${e.apiKey}=`, 'm'));
  });
});
