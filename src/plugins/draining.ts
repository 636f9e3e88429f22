import fp from 'fastify-plugin';

declare module 'fastify' {
  interface FastifyInstance {
    /** True once the service is stopping: /readyz answers 503 and every answer closes its connection. */
    readonly draining: boolean;
    /** True once the close has begun: a request still arriving is refused (src/plugins/http-edge.ts). */
    readonly closing: boolean;
    /** Starts draining before the close, so a load balancer moves away while requests are still served. */
    startDraining(): void;
  }
}

/**
 * The first step of a stop (src/server.ts): while draining, each answer carries `Connection: close`, so every
 * keep-alive client leaves after its next answer instead of sending a request onto a socket the close is about
 * to cut (a request Node has not read yet looks idle, and closing idle connections resets it).
 */
export default fp(
  async (app) => {
    let draining = false;
    app.decorate('draining', { getter: () => draining });
    app.decorate('startDraining', () => {
      draining = true;
    });
    // Once the close has begun, a request still arriving is refused by the service's own 503, which carries
    // Retry-After like every other 503 (Fastify's return503OnClosing answers without it).
    // The refusal itself is in the HTTP edge's one onRequest hook, which every request passes anyway.
    let closing = false;
    app.decorate('closing', { getter: () => closing });
    app.addHook('preClose', async () => {
      draining = true;
      closing = true;
    });
    app.addHook('onSend', (_request, reply, payload, done) => {
      if (draining) reply.header('connection', 'close');
      done(null, payload);
    });
  },
  { name: 'draining' },
);
