"""The classic room-based chat server (the Socket.IO guide's "user room" design), which the
benchmark suite drives with the same load generator as Switchboard; see README.md."""
