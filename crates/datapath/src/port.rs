//! Ports: the port trait, in-memory queues and AF_PACKET sockets.
