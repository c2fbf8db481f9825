"""The core's WebSocket endpoints: the shared handshake, the agent gateway and the client gateway."""
