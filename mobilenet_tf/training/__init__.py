"""The shared training engine: configs, strategies, paper schedules, the run loop."""
