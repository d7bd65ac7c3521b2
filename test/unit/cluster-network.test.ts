/** The names and addresses of a cluster's hosts: within the kernel's limits and the benchmark range. */
import { describe, expect, it } from 'vitest';
import { hostPlan, MAX_COMPUTE } from '../../starters/cluster/hosts.js';
import {
  checkPrefix,
  gatewayOf,
  hostAddress,
  names,
  newPrefix,
  SUBNETS,
  subnetBase,
} from '../../starters/cluster/network.js';

describe('cluster network names', () => {
  it('keeps every interface name within 15 characters, with the cluster prefix', () => {
    const prefix = newPrefix();
    expect(checkPrefix(prefix)).toBe(prefix);
    const n = names(prefix);
    const slots = hostPlan(MAX_COMPUTE).length;
    for (const name of [n.bridge, n.veth(slots - 1), n.peer(slots - 1)]) {
      expect(name.startsWith(prefix)).toBe(true);
      expect(name.length).toBeLessThanOrEqual(15);
    }
    expect(n.netns('compute-3')).toBe(`${prefix}-compute-3`);
    expect(() => checkPrefix('imf12345; rm')).toThrow(/prefix: expected "imf" and 5 hex digits/);
  });

  it('takes /24s from 198.18.0.0/15 only: gateway .1, hosts from .10', () => {
    expect(subnetBase(0)).toBe('198.18.0');
    expect(subnetBase(255)).toBe('198.18.255');
    expect(subnetBase(256)).toBe('198.19.0');
    expect(subnetBase(SUBNETS - 1)).toBe('198.19.255');
    expect(() => subnetBase(SUBNETS)).toThrow(/subnet: expected a whole number from 0 to 511/);
    expect(gatewayOf(7)).toBe('198.18.7.1');
    expect(hostAddress(7, 0)).toBe('198.18.7.10');
    expect(hostAddress(7, hostPlan(MAX_COMPUTE).length - 1)).toMatch(/^198\.18\.7\.\d+$/);
    expect(Number(hostAddress(7, hostPlan(MAX_COMPUTE).length - 1).split('.')[3])).toBeLessThan(255);
  });

  it('plans the hosts a site has, control-0 also running the orchestrator', () => {
    expect(hostPlan(2).map((h) => `${h.name}:${h.roles.join('+')}`)).toEqual([
      'builder-0:builder',
      'nas-0:nas',
      'compute-0:compute',
      'compute-1:compute',
      'cloud-0:cloud',
      'control-0:control+orchestrator',
    ]);
    expect(() => hostPlan(0)).toThrow(/compute: expected a whole number from 1 to 64/);
  });
});
