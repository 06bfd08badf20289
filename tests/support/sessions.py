"""SDP descriptions the loopback tests announce to mauthserver: an any-source session and a
source-specific one whose sender is declared."""

ASM = b"""v=0\r
o=- 77 1 IN IP4 192.0.2.55\r
s=Lobby camera\r
c=IN IP4 239.255.12.42/32\r
t=0 0\r
m=video 5004 RTP/AVP 33\r
"""

SSM = b"""v=0\r
o=- 78 1 IN IP4 192.0.2.56\r
s=Declared feed\r
c=IN IP4 232.1.1.1/16\r
t=0 0\r
a=source-filter: incl IN IP4 232.1.1.1 192.0.2.10\r
m=video 5004 RTP/AVP 33\r
"""
