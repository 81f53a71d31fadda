"""The worker process: RQ job entry points, the runtime that wires a worker's dependencies, the worker loop."""
