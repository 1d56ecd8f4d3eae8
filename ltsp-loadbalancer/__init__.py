"""ltsp-loadbalancer: the central balancer of ltsp-loadbalance.

It polls every application server's ltsp-server-advertise on its own and
answers each login with one HTTP request, counting the logins it hands out
(see docs/loadbalancer.md). Its version is ltsp_lbcore.__version__.
"""
