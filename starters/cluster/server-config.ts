/**
 * The Temporal server's configuration for one cluster: PostgreSQL persistence and visibility,
 * mutual TLS on the frontend (clients of the cluster CA only) and between the services (internode
 * CA), the default JWT claim mapper and authorizer with imgflow's key set, and one port pair per
 * service. Written 0600: it holds the database password.
 */
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { Postgres } from './database.js';
import { FRONTEND_TLS_NAME } from './pki.js';
import { WORKER_LIVENESS } from '../temporal-server.js';
import { TEMPORAL_SERVICES, type ClusterState } from './state.js';

export const SERVER_ENV = 'cluster';

export function configDir(state: Pick<ClusterState, 'dir'>): string {
  return path.join(state.dir, 'config');
}

function datastore(pg: Postgres, database: string, maxConns: number) {
  return {
    sql: {
      pluginName: 'postgres12',
      databaseName: database,
      connectAddr: `${pg.host.includes(':') ? `[${pg.host}]` : pg.host}:${pg.port}`,
      connectProtocol: 'tcp',
      user: pg.user,
      password: pg.password,
      maxConns,
      maxIdleConns: maxConns,
      maxConnLifetime: '1h',
    },
  };
}

export function serverConfig(state: ClusterState, pg: Postgres): Record<string, unknown> {
  const { pki } = state;
  const internodeServer = {
    certFile: pki.internode.cert,
    keyFile: pki.internode.key,
    requireClientAuth: true,
    clientCaFiles: [pki.internode.caCert],
  };
  const internodeClient = { serverName: 'localhost', rootCaFiles: [pki.internode.caCert] };
  const services = Object.fromEntries(
    TEMPORAL_SERVICES.map((name) => {
      const ports = state.ports[name];
      // Only the frontend faces clients; the rest listen on loopback.
      const bind = name === 'frontend' ? { bindOnIP: state.listen } : { bindOnLocalHost: true };
      return [name, { rpc: { grpcPort: ports.grpc, membershipPort: ports.membership, ...bind } }];
    }),
  );
  return {
    log: { stdout: true, level: 'warn', format: 'json' },
    persistence: {
      defaultStore: 'default',
      visibilityStore: 'visibility',
      numHistoryShards: 4,
      datastores: {
        default: datastore(pg, state.databases.temporal, 10),
        visibility: datastore(pg, state.databases.visibility, 4),
      },
    },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: '127.0.0.1' },
      tls: {
        // A certificate reissued for new addresses is taken up without a restart.
        refreshInterval: '1m',
        internode: { server: internodeServer, client: internodeClient },
        // The system worker reaches the internal frontend as a peer, with the internode certificate.
        frontend: {
          server: {
            certFile: pki.frontend.cert,
            keyFile: pki.frontend.key,
            requireClientAuth: true,
            clientCaFiles: [pki.caCert],
          },
        },
      },
      authorization: {
        jwtKeyProvider: { keySourceURIs: [`http://127.0.0.1:${state.ports.keys}/jwks.json`], refreshInterval: '1m' },
        permissionsClaimName: 'permissions',
        authorizer: 'default',
        claimMapper: 'default',
      },
    },
    services,
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: {
        active: {
          enabled: true,
          initialFailoverVersion: 1,
          rpcName: 'frontend',
          rpcAddress: `${state.listen}:${state.ports.frontend.grpc}`,
        },
      },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    dynamicConfigClient: { filepath: path.join(configDir(state), 'dynamicconfig.yaml'), pollInterval: '10s' },
  };
}

/** Settings the services read at run time; the same choices the dev server gets from imgflow. */
const DYNAMIC_CONFIG = {
  // One partition per task queue: a small cluster gains nothing from more.
  'matching.numTaskqueueReadPartitions': [{ value: 1 }],
  'matching.numTaskqueueWritePartitions': [{ value: 1 }],
  // Search attributes registered by `up` are usable at once.
  'system.forceSearchAttributesCacheRefreshOnRead': [{ value: true }],
  'frontend.enableUpdateWorkflowExecution': [{ value: true }],
  'frontend.enableUpdateWorkflowExecutionAsyncAccepted': [{ value: true }],
  // Long polls held at once per namespace and frontend. Each activity worker holds up to 10 (the
  // SDK's default), so Temporal's default of 1,200 is reached near 120 hosts; past it polls are
  // refused ("namespace concurrent poller limit exceeded") and a host's tasks wait for its retry,
  // which bench/scale.ts measured as maps taking a minute with 200 compute hosts. A poll waiting
  // costs the frontend little: room for 1,000 hosts.
  'frontend.namespaceCount': [{ value: 10_000 }],
  ...Object.fromEntries(Object.entries(WORKER_LIVENESS).map(([key, value]) => [key, [{ value }]])),
};

export function writeServerConfig(state: ClusterState, pg: Postgres): string {
  const dir = configDir(state);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${SERVER_ENV}.yaml`);
  fs.writeFileSync(file, stringify(serverConfig(state, pg)), { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  fs.writeFileSync(path.join(dir, 'dynamicconfig.yaml'), stringify(DYNAMIC_CONFIG), { mode: 0o600 });
  return dir;
}

/** The Web UI server's configuration: it reaches the frontend with its own client certificate. */
export function writeUiConfig(state: ClusterState, client: { cert: string; key: string }): string {
  const dir = path.join(state.dir, 'ui-config');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ui = {
    temporalGrpcAddress: `${state.listen}:${state.ports.frontend.grpc}`,
    host: '127.0.0.1',
    port: state.ports.uiServer,
    enableUi: true,
    // It acts with a viewer's token: offer no action the frontend would refuse.
    disableWriteActions: true,
    defaultNamespace: state.namespace,
    tls: {
      caFile: state.pki.caCert,
      certFile: client.cert,
      keyFile: client.key,
      enableHostVerification: true,
      serverName: FRONTEND_TLS_NAME,
    },
    cors: { cookieInsecure: true },
  };
  fs.writeFileSync(path.join(dir, `${SERVER_ENV}.yaml`), stringify(ui), { mode: 0o600 });
  return dir;
}
