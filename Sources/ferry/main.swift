import FerryCLI
runFerry()
