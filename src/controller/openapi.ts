// The admin API described as OpenAPI 3.0, served at /api/openapi.json. Kept beside admin-api.ts: a
// change to one is a change to the other (a test checks that every path here answers).
const json = (schema: object) => ({ 'application/json': { schema } });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const error = (description: string) => ({ description, content: json(ref('Error')) });
const ok = (description: string, schema: object) => ({ description, content: json(schema) });
const list = (key: string, item: string) => ({
  type: 'object',
  properties: { [key]: { type: 'array', items: ref(item) } },
});
const common = { '401': error('Missing or wrong admin token') };
const nameParam = { name: 'name', in: 'path', required: true, schema: { type: 'string' } };
const source = { type: 'string', enum: ['config', 'api'] };
// A route may also come from an agent's discovery (docs/kubernetes.md, "Discovery").
const routeSource = { type: 'string', enum: ['config', 'api', 'agent'] };
const time = { type: 'string', format: 'date-time' };

export const OPENAPI = Object.freeze({
  openapi: '3.0.3',
  info: { title: 'Sluice admin API', version: '1' },
  components: {
    securitySchemes: { admin: { type: 'http', scheme: 'bearer' } },
    schemas: {
      Error: {
        type: 'object',
        required: ['error'],
        properties: {
          error: {
            type: 'object',
            required: ['code', 'message'],
            properties: {
              code: {
                type: 'string',
                enum: [
                  'unauthorized',
                  'invalid_input',
                  'invalid_json',
                  'not_found',
                  'conflict',
                  'method_not_allowed',
                  'payload_too_large',
                  'internal',
                  'store_unavailable',
                  'address_in_use',
                  'duplicate',
                  'listen_failed',
                ],
              },
              message: { type: 'string' },
              field: { type: 'string', description: 'The input field at fault (400, 409)' },
            },
          },
        },
      },
      TcpRouteInput: {
        type: 'object',
        required: ['listen', 'cluster', 'target'],
        properties: {
          listen: { type: 'string', description: 'host:port, an IP address; port 0 binds a free one' },
          cluster: { type: 'string' },
          target: { type: 'string', description: 'tcp://host:port' },
          proxyProtocol: { type: 'string', enum: ['v2'] },
        },
      },
      TcpRoute: {
        type: 'object',
        properties: {
          listen: { type: 'string' },
          cluster: { type: 'string' },
          target: { type: 'string' },
          proxyProtocol: { type: 'string', enum: ['v2'] },
          address: { type: 'string', description: 'The address as bound, host:port' },
          openConnections: { type: 'integer' },
        },
      },
      Cluster: {
        type: 'object',
        properties: { name: { type: 'string' }, created: time, source },
      },
      Token: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          cluster: { type: 'string' },
          created: time,
          revoked: { ...time, nullable: true },
          source,
        },
      },
      NewToken: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          cluster: { type: 'string' },
          created: time,
          token: { type: 'string', description: 'The token itself (slu_…), shown this once' },
        },
      },
      RouteInput: {
        type: 'object',
        required: ['host', 'cluster', 'target'],
        additionalProperties: false,
        properties: {
          host: { type: 'string', example: 'app.example.test' },
          path: { type: 'string', default: '/' },
          cluster: { type: 'string' },
          target: {
            type: 'string',
            example: 'http://127.0.0.1:9000',
            description:
              'http://, https:// or h2c:// (HTTP/2 cleartext, gRPC) host:port; tcp://host:port with tls: passthrough',
          },
          serverName: {
            type: 'string',
            description: 'For an https:// target: the SNI name its certificate must carry',
          },
          tls: {
            type: 'string',
            enum: ['passthrough'],
            description:
              'passthrough: TLS connections whose SNI names this host are relayed, still encrypted, to a tcp://host:port target',
          },
        },
      },
      Route: {
        type: 'object',
        properties: {
          host: { type: 'string' },
          path: { type: 'string' },
          cluster: { type: 'string' },
          target: { type: 'string' },
          serverName: { type: 'string' },
          tls: { type: 'string', enum: ['passthrough'] },
          created: time,
          source: routeSource,
        },
      },
      Tunnel: {
        type: 'object',
        properties: {
          cluster: { type: 'string' },
          agent: { type: 'string' },
          replica: { type: 'string' },
          version: {
            type: 'string',
            nullable: true,
            description: "The agent's version from its HELLO; null for an agent that sends none",
          },
          remote: { type: 'string', nullable: true },
          since: time,
          rttMs: { type: 'number' },
          streams: { type: 'integer' },
          bytesIn: { type: 'integer' },
          bytesOut: { type: 'integer' },
          draining: { type: 'boolean' },
        },
      },
      Rates: {
        type: 'object',
        description: 'Requests that finished in the last `windowSeconds`, counted in one-second buckets',
        properties: {
          requests: { type: 'integer' },
          perSecond: { type: 'number', description: '`requests` over the seconds the window covers' },
          errors5xx: { type: 'integer', description: 'Of `requests`, those answered with a 5xx status' },
          failed: {
            type: 'integer',
            description:
              'Of `requests`, those whose answer broke off after it began, or never came though the client waited',
          },
        },
      },
      RouteTraffic: {
        allOf: [
          {
            type: 'object',
            properties: {
              host: { type: 'string' },
              path: { type: 'string' },
              cluster: { type: 'string' },
              target: { type: 'string' },
            },
          },
          ref('Rates'),
        ],
      },
      RecentRequest: {
        type: 'object',
        properties: {
          at: { ...time, description: 'When the request arrived' },
          requestId: { type: 'string' },
          kind: { type: 'string', enum: ['http', 'upgrade'] },
          method: { type: 'string' },
          host: { type: 'string', description: 'The Host header, cut at 256 characters' },
          path: { type: 'string', description: 'Without the query, cut at 512 characters' },
          route: { type: 'string', nullable: true, description: 'host[/path] of the route; null: none' },
          cluster: { type: 'string', nullable: true },
          status: { type: 'integer', description: '0 when no status was sent' },
          ms: { type: 'number' },
          bytesIn: { type: 'integer' },
          bytesOut: { type: 'integer' },
          outcome: {
            type: 'string',
            nullable: true,
            enum: ['done', 'failed', 'client-aborted', 'broken', null],
            description: 'How the exchange on the tunnel ended; null when it never reached one',
          },
          reason: { type: 'string', nullable: true, description: 'Why Sluice answered with an error page' },
        },
      },
      TcpRouteTraffic: {
        type: 'object',
        description: 'A TCP route or a TLS passthrough host, with its counts since it was added',
        properties: {
          kind: { type: 'string', enum: ['tcp', 'tls-passthrough'] },
          route: {
            type: 'string',
            description: "The TCP route's bound listen address, or the passthrough route's host",
          },
          cluster: { type: 'string' },
          target: { type: 'string', example: 'tcp://db:5432' },
          open: { type: 'integer', description: 'Connections open now' },
          connections: { type: 'integer', description: 'Connections admitted, open ones included' },
          refused: { type: 'integer', description: 'Connections turned away at a tcp.* limit' },
          bytesIn: { type: 'integer', description: 'Client to target, open connections included' },
          bytesOut: { type: 'integer', description: 'Target to client, open connections included' },
        },
      },
      RecentConnection: {
        type: 'object',
        properties: {
          at: { ...time, description: 'When the connection was accepted' },
          kind: { type: 'string', enum: ['tcp', 'tls-passthrough'] },
          client: { type: 'string', example: '203.0.113.7:51234' },
          route: { type: 'string' },
          cluster: { type: 'string' },
          target: { type: 'string' },
          ms: { type: 'number' },
          bytesIn: { type: 'integer' },
          bytesOut: { type: 'integer' },
          outcome: {
            type: 'string',
            enum: [
              'done',
              'reset',
              'cut',
              'no_tunnel',
              'refused',
              'target_unreachable',
              'target_timeout',
              'target_denied',
              'over_limit',
            ],
            description: "As in the connection's log line (docs/tcp.md)",
          },
        },
      },
      Traffic: {
        type: 'object',
        properties: {
          windowSeconds: { type: 'integer', example: 10 },
          routes: {
            type: 'array',
            items: ref('RouteTraffic'),
            description: 'The HTTP routes; passthrough routes are in `tcpRoutes`',
          },
          unrouted: { allOf: [ref('Rates')], description: 'Requests that matched no route' },
          requests: {
            type: 'array',
            items: ref('RecentRequest'),
            description: 'The last 100 finished requests, newest first',
          },
          tcpRoutes: {
            type: 'array',
            items: ref('TcpRouteTraffic'),
            description: 'TCP routes, then TLS passthrough hosts',
          },
          connections: {
            type: 'array',
            items: ref('RecentConnection'),
            description: 'The last 100 finished TCP and passthrough connections, newest first',
          },
        },
      },
    },
  },
  security: [{ admin: [] }],
  paths: {
    '/api/clusters': {
      get: {
        summary: 'List clusters',
        responses: { '200': ok('Clusters', list('clusters', 'Cluster')), ...common },
      },
      post: {
        summary: 'Add a cluster',
        requestBody: {
          required: true,
          content: json({ type: 'object', required: ['name'], properties: { name: { type: 'string' } } }),
        },
        responses: {
          '201': ok('Added', { type: 'object', properties: { cluster: ref('Cluster') } }),
          '400': error('Invalid input'),
          '409': error('The cluster exists'),
          ...common,
        },
      },
    },
    '/api/clusters/{name}': {
      delete: {
        summary: 'Delete a cluster and its tokens, closing their tunnels',
        parameters: [nameParam],
        responses: {
          '200': ok('Deleted', { type: 'object' }),
          '404': error('No such cluster'),
          '409': error('Routes still name the cluster'),
          ...common,
        },
      },
    },
    '/api/clusters/{name}/tokens': {
      get: {
        summary: "List a cluster's tokens (never the token or its hash)",
        parameters: [nameParam],
        responses: {
          '200': ok('Tokens', list('tokens', 'Token')),
          '404': error('No such cluster'),
          ...common,
        },
      },
      post: {
        summary: 'Create an agent token; the response is the only time it is shown',
        parameters: [nameParam],
        responses: { '201': ok('Created', ref('NewToken')), '404': error('No such cluster'), ...common },
      },
    },
    '/api/tokens/{id}': {
      delete: {
        summary: 'Revoke a token and close its live tunnels',
        parameters: [{ ...nameParam, name: 'id' }],
        responses: { '200': ok('Revoked', { type: 'object' }), '404': error('No such token'), ...common },
      },
    },
    '/api/routes': {
      get: { summary: 'List routes', responses: { '200': ok('Routes', list('routes', 'Route')), ...common } },
      post: {
        summary: 'Add a route',
        requestBody: { required: true, content: json(ref('RouteInput')) },
        responses: {
          '201': ok('Added', { type: 'object', properties: { route: ref('Route') } }),
          '400': error('Invalid input; `field` names it'),
          '409': error('A route with this host and path exists'),
          ...common,
        },
      },
      delete: {
        summary: 'Delete the route with this host and path',
        parameters: [
          { name: 'host', in: 'query', required: true, schema: { type: 'string' } },
          { name: 'path', in: 'query', required: false, schema: { type: 'string', default: '/' } },
        ],
        responses: { '200': ok('Deleted', { type: 'object' }), '404': error('No such route'), ...common },
      },
    },
    '/api/tcp-routes': {
      get: {
        summary: 'List TCP routes with their bound address and open connections',
        responses: { '200': ok('TCP routes', list('tcpRoutes', 'TcpRoute')), ...common },
      },
      post: {
        summary: 'Add a TCP route and bind its listener at once (it lasts until the controller restarts)',
        requestBody: { required: true, content: json(ref('TcpRouteInput')) },
        responses: {
          '201': ok('Added', { type: 'object', properties: { tcpRoute: ref('TcpRoute') } }),
          '400': error('Invalid input; `field` names it'),
          '404': error('No such cluster'),
          '409': error('The listen address is in use (address_in_use) or has a route (duplicate)'),
          ...common,
        },
      },
    },
    '/api/tcp-routes/{listen}': {
      delete: {
        summary: 'Delete a TCP route: stop accepting at once, drain open connections for the grace period',
        parameters: [{ ...nameParam, name: 'listen', description: 'The listen address, URL-encoded' }],
        responses: { '204': { description: 'Deleted' }, '404': error('No such TCP route'), ...common },
      },
    },
    '/api/tunnels': {
      get: {
        summary: 'List live tunnels',
        responses: { '200': ok('Tunnels', list('tunnels', 'Tunnel')), ...common },
      },
    },
    '/api/traffic': {
      get: {
        summary: "Each route's request and error rates over a short window, and the last requests",
        responses: { '200': ok('Traffic', ref('Traffic')), ...common },
      },
    },
  },
});
