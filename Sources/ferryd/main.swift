import FerryCLI
print("ferryd: not built yet")
