import FerryCLI
runFerryDaemon()
