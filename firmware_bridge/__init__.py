"""The bridge between the host and a board: the serial protocol (protocol.py) and the
firmware it speaks to (firmware/, C99 for Cortex-M). This slice holds the frame layer only;
the board session, A/B model slots and the commands come later (docs/protocol.md)."""
