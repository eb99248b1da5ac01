// SecProxyConfig
