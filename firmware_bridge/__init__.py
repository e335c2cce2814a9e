"""The bridge between the host and a board: frames (protocol.py), message payloads
(messages.py, with their C twin firmware/include/el_messages.h), the host's Board session
over pyserial (board.py), the Linux-board agent behind `edge-lls serve` (agent.py), and the
firmware they speak to (firmware/, C99 for Cortex-M). docs/protocol.md has the layouts."""
