// The floor for the agent's footprint: plain node holding one idle websocket, pinging every 45 s
// like the agent's keepAlive. Usage: node scripts/bench/idle-ws-client.mjs ws://127.0.0.1:PORT/ws?id=x
import WebSocket from 'ws';

const ws = new WebSocket(process.argv[2]);
ws.on('open', () => {
  setInterval(() => ws.send('PING'), 45_000);
});
ws.on('error', () => {});
ws.on('close', () => process.exit(1));
