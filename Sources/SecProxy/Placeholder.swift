// SecProxy
