import SecProxy
print("secproxy")
