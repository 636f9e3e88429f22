import { Writable } from 'node:stream';

/** A pino destination that keeps the app's JSON log lines, parsed, for a test to read. */
export function logLines<Line = Record<string, unknown>>(): { destination: Writable; lines: Line[] } {
  const lines: Line[] = [];
  let rest = '';
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const parts = (rest + chunk.toString('utf8')).split('\n');
      rest = parts.pop() ?? '';
      for (const part of parts) if (part) lines.push(JSON.parse(part) as Line);
      done();
    },
  });
  return { destination, lines };
}
