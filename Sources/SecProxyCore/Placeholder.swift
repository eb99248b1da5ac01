// SecProxyCore
