import FerryCLI
await runFerryDaemon()
