import fp from 'fastify-plugin';

declare module 'fastify' {
  interface FastifyInstance {
    /** True once the service is stopping: /readyz answers 503 and every answer closes its connection. */
    readonly draining: boolean;
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
    app.addHook('preClose', async () => {
      draining = true;
    });
    app.addHook('onSend', (_request, reply, payload, done) => {
      if (draining) reply.header('connection', 'close');
      done(null, payload);
    });
  },
  { name: 'draining' },
);
