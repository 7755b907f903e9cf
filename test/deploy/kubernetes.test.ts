// The Kubernetes manifests (deploy/kubernetes): every overlay renders with `kubectl kustomize`, every
// object it renders is valid against the Kubernetes API schemas (kubernetes-models), and the
// invariants that make an install safe hold: probes point at the port the process serves them on,
// each pod's termination grace is longer than the drain it asks for, every container runs non-root
// with a read-only root and no capabilities, no image is `latest` or untagged, an agent pod has no
// API token unless its overlay turns discovery on (and then exactly the RBAC discovery needs), and a
// fleet's controllers know their Redis and advertise their own address to peers.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as models from 'kubernetes-models';
import { parseAllDocuments } from 'yaml';

const KUBECTL = '/usr/bin/kubectl';
const skip = existsSync(KUBECTL) ? false : `${KUBECTL} is not installed (it renders the kustomize overlays)`;
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const OVERLAYS = `${REPO}deploy/kubernetes/overlays`;

type Obj = { apiVersion: string; kind: string; metadata: { name: string }; spec?: Record<string, unknown> };
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: { httpGet?: { port: string | number } };
  livenessProbe?: { httpGet?: { port: string | number } };
  securityContext?: {
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[] };
  };
}
interface PodSpec {
  containers: Container[];
  terminationGracePeriodSeconds?: number;
  automountServiceAccountToken?: boolean;
  securityContext?: { runAsNonRoot?: boolean };
}

function render(overlay: string): Promise<Obj[]> {
  return new Promise((resolve, reject) => {
    execFile(KUBECTL, ['kustomize', `${OVERLAYS}/${overlay}`], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err !== null) return reject(new Error(`kubectl kustomize ${overlay}: ${stderr || err.message}`));
      resolve(parseAllDocuments(stdout).map((d) => d.toJS() as Obj));
    });
  });
}

/** The kubernetes-models class for an object's apiVersion and kind; undefined for a CRD's kind. */
function modelOf(obj: Obj): (new (data: unknown) => { validate(): void }) | undefined {
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
  const key = group === '' ? version! : group!.replace(/\.([a-z])/g, (_, c: string) => c.toUpperCase());
  const byVersion = (models as unknown as Record<string, Record<string, Record<string, unknown>>>)[key];
  const space = group === '' ? byVersion : byVersion?.[version!];
  return space?.[obj.kind] as (new (data: unknown) => { validate(): void }) | undefined;
}

function durationSeconds(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  assert.ok(m !== null, `a duration: ${text}`);
  return Number(m[1]) / (m[2] === 'ms' ? 1000 : m[2] === 'm' ? 1 / 60 : 1);
}

function flag(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i < 0 ? undefined : args[i + 1];
}

const overlays = existsSync(OVERLAYS) ? readdirSync(OVERLAYS) : [];
/** The overlays with route discovery on, and the RBAC kind each grants it with. */
const DISCOVERY = new Map([
  ['discovery', 'ClusterRole'],
  ['discovery-namespaced', 'Role'],
]);

type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
type Binding = Obj & {
  metadata: { namespace?: string };
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects: { kind: string; name: string; namespace?: string }[];
};

describe('the Kubernetes manifests', { skip }, () => {
  test('there are the dev, fleet and discovery overlays', () => {
    assert.deepEqual(overlays.sort(), ['dev', 'discovery', 'discovery-namespaced', 'fleet']);
  });

  for (const overlay of overlays) {
    describe(`overlay ${overlay}`, () => {
      test('every object renders and is valid against the API schemas', async () => {
        const objects = await render(overlay);
        assert.ok(objects.length > 0);
        for (const obj of objects) {
          const Model = modelOf(obj);
          if (obj.kind === 'PodMonitor') {
            // A Prometheus Operator CRD, which kubernetes-models does not ship: checked by hand.
            assert.equal(obj.apiVersion, 'monitoring.coreos.com/v1');
            const endpoints = (obj.spec as { podMetricsEndpoints: { port: string; path: string }[] })
              .podMetricsEndpoints;
            assert.deepEqual(
              endpoints.map((e) => [e.port, e.path]),
              [['admin', '/metrics']],
            );
            continue;
          }
          assert.ok(Model !== undefined, `no schema for ${obj.apiVersion} ${obj.kind}`);
          assert.doesNotThrow(() => new Model(obj).validate(), `${obj.kind} ${obj.metadata.name}`);
        }
      });

      test('pods: probes on the served port, grace longer than the drain, locked down, pinned images', async () => {
        const deployments = (await render(overlay)).filter((o) => o.kind === 'Deployment');
        assert.ok(deployments.length > 0);
        for (const d of deployments) {
          const pod = (d.spec as { template: { spec: PodSpec } }).template.spec;
          const what = `${overlay} ${d.metadata.name}`;
          assert.equal(pod.securityContext?.runAsNonRoot, true, `${what} runAsNonRoot`);
          // Only an agent that discovers routes talks to the API server.
          const discovers = d.metadata.name === 'sluice-agent' && DISCOVERY.has(overlay);
          assert.equal(
            pod.automountServiceAccountToken,
            discovers,
            `${what} mounts an API token: ${discovers}`,
          );
          for (const c of pod.containers) {
            assert.match(c.image, /:[\w.-]+$/, `${what} ${c.image} has a tag`);
            assert.doesNotMatch(c.image, /:latest$/, `${what} ${c.image}`);
            assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${what} read-only root`);
            assert.equal(c.securityContext?.allowPrivilegeEscalation, false, what);
            assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], what);
            if (c.args === undefined || !c.image.startsWith('sluice:')) continue;
            // Sluice's own: the probes' port is the one its flags listen on, and the pod outlives the drain.
            const listen =
              c.args[0] === 'agent' ? flag(c.args, '--health-listen') : flag(c.args, '--admin-listen');
            assert.ok(listen !== undefined, `${what} serves its probes`);
            const port = Number(listen.split(':').at(-1));
            for (const probe of [c.readinessProbe, c.livenessProbe]) {
              const named = probe?.httpGet?.port;
              const number =
                typeof named === 'number' ? named : c.ports?.find((p) => p.name === named)?.containerPort;
              assert.equal(number, port, `${what}: a probe on port ${String(named)}, the process on ${port}`);
            }
            const grace = durationSeconds(flag(c.args, '--grace-period') ?? '30s');
            assert.ok(
              (pod.terminationGracePeriodSeconds ?? 30) > grace,
              `${what}: terminationGracePeriodSeconds > ${grace}s`,
            );
          }
        }
      });

      test('the controller and agent are wired as the overlay means', async () => {
        const objects = await render(overlay);
        const deployment = (name: string) => {
          const d = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === name);
          return d === undefined ? undefined : (d.spec as { replicas: number; template: { spec: PodSpec } });
        };
        const controller = deployment('sluice-controller')!;
        assert.ok(controller !== undefined);
        const env = new Map(controller.template.spec.containers[0]!.env!.map((e) => [e.name, e.value]));
        if (overlay === 'fleet') {
          assert.ok(controller.replicas >= 2, 'a fleet has several controllers');
          assert.match(env.get('SLUICE_STORE') ?? '', /^redis:\/\/sluice-redis:6379$/);
          assert.equal(env.get('SLUICE_PEER_ADVERTISE'), 'tcp://$(POD_IP):7001');
          assert.ok(objects.some((o) => o.kind === 'Service' && o.metadata.name === 'sluice-redis'));
          assert.ok(
            objects.some((o) => o.kind === 'PodDisruptionBudget' && o.metadata.name === 'sluice-controller'),
          );
        } else {
          assert.equal(controller.replicas, 1);
          assert.equal(env.has('SLUICE_STORE'), false, 'dev runs on SQLite');
          const agent = deployment('sluice-agent')!;
          const agentEnv = new Map(agent.template.spec.containers[0]!.env!.map((e) => [e.name, e.value]));
          assert.equal(agentEnv.get('SLUICE_CONTROLLER'), 'tcp://sluice-tunnel:7000');
          assert.ok(objects.some((o) => o.kind === 'Service' && o.metadata.name === 'sluice-tunnel'));
        }
      });

      test('route discovery: on exactly where the overlay says, with the least RBAC it needs', async () => {
        const objects = await render(overlay);
        const agent = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'sluice-agent');
        const roleKind = DISCOVERY.get(overlay);
        const rbac = objects.filter((o) => /^(Cluster)?Role(Binding)?$/.test(o.kind));
        if (agent === undefined) {
          // The controllers alone (the fleet overlay): nothing of theirs reads the Kubernetes API.
          assert.equal(roleKind, undefined);
          assert.deepEqual(rbac, []);
          return;
        }
        const container = (agent.spec as { template: { spec: PodSpec } }).template.spec.containers[0]!;
        const env = new Map((container.env ?? []).map((e) => [e.name, e]));
        const account = objects.find(
          (o) => o.kind === 'ServiceAccount' && o.metadata.name === 'sluice-agent',
        ) as (Obj & { automountServiceAccountToken?: boolean; metadata: { namespace?: string } }) | undefined;
        if (roleKind === undefined) {
          assert.equal(env.has('SLUICE_DISCOVER'), false, `${overlay} discovers nothing`);
          assert.deepEqual(rbac, [], `${overlay} grants the API nothing`);
          assert.equal(account?.automountServiceAccountToken, false);
          return;
        }
        assert.equal(env.get('SLUICE_DISCOVER')?.value, 'true');
        assert.equal(account?.automountServiceAccountToken, true);
        assert.deepEqual(
          rbac.map((o) => o.kind).sort(),
          [roleKind, `${roleKind}Binding`],
          `${overlay}: one ${roleKind} and its binding`,
        );
        const role = rbac.find((o) => o.kind === roleKind) as Obj & { rules: Rule[] };
        const grants = role.rules
          .flatMap((r) => r.resources.flatMap((res) => r.verbs.map((v) => `${r.apiGroups[0]}/${res}:${v}`)))
          .sort();
        assert.deepEqual(grants, [
          '/endpoints:get',
          '/endpoints:list',
          '/endpoints:watch',
          '/services:get',
          '/services:list',
          '/services:watch',
          'networking.k8s.io/ingresses/status:update',
          'networking.k8s.io/ingresses:get',
          'networking.k8s.io/ingresses:list',
          'networking.k8s.io/ingresses:watch',
        ]);
        const binding = rbac.find((o) => o.kind === `${roleKind}Binding`) as Binding;
        assert.deepEqual(binding.roleRef, {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: roleKind,
          name: role.metadata.name,
        });
        assert.deepEqual(binding.subjects, [
          { kind: 'ServiceAccount', name: 'sluice-agent', namespace: account!.metadata.namespace },
        ]);
        const namespace = env.get('SLUICE_DISCOVER_NAMESPACE');
        if (roleKind === 'Role') {
          // A Role reaches its own namespace only, so the agent must watch no other.
          assert.deepEqual(namespace?.valueFrom, { fieldRef: { fieldPath: 'metadata.namespace' } });
          assert.equal(binding.metadata.namespace, account!.metadata.namespace);
        } else assert.equal(namespace, undefined, 'a cluster-wide agent watches every namespace');
        // The API server is reachable through the NetworkPolicy (443 for the Service, 6443 behind it).
        const policy = objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'sluice-agent')!;
        const ports = (policy.spec as { egress: { ports?: { port: number }[] }[] }).egress.flatMap((r) =>
          (r.ports ?? []).map((p) => p.port),
        );
        for (const port of [443, 6443]) assert.ok(ports.includes(port), `egress to ${port}`);
      });
    });
  }
});
