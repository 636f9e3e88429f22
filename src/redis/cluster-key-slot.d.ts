// cluster-key-slot (the slot function ioredis itself uses) ships no types.
declare module 'cluster-key-slot' {
  /** The Redis Cluster slot (0-16383) of a key, its hash tag honoured. */
  function calculateSlot(key: string | Buffer): number;
  export default calculateSlot;
}
