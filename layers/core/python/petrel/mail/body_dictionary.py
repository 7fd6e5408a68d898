"""The preset dictionary an email's inline body is compressed with (zlib's `zdict`), version 1.

Petrel builds every body itself (petrel.mail.mime): its headers and MIME structure, and the HTML that
transactional and campaign mail is made of, repeat from one email to the next. Compressed against these
bytes, a body of a few KB comes out about a quarter smaller than with zlib alone (a 3 KB receipt: 900 ->
700 bytes), which keeps an email item under DynamoDB's 1 KB write unit more often.

NEVER CHANGE THESE BYTES: every item stored with `body_zd1` needs them to be read. A better dictionary is
a new version (`V2`, stored under `body_zd2`), read beside this one.
"""

from __future__ import annotations

# The sha256 of V1: tests/unit/test_body_dictionary.py checks it never changes.
V1_SHA256 = "d3ae300fa0e02225ee2e9772ef5dc577a36488156e5236bc2761ee95d1cd8c72"

V1 = (
    b'<html><head><meta charset=3D"utf-8"><meta name=3D"viewport" content=3D"widt=\n'
    b'h=3Ddevice-width, initial-scale=3D1"></head><body style=3D"margin:0;padding=\n'
    b':0"><table role=3D"presentation" width=3D"100%" cellpadding=3D"0" cellspaci=\n'
    b'ng=3D"0" border=3D"0"><tr><td align=3D"center"><div style=3D"max-width:600p=\n'
    b"x;margin:0 auto;font-family:Helvetica,Arial,sans-serif;font-size:14px;line-=\n"
    b'height:1.5;color:#333333"><h1 style=3D"font-size:20px"><p style=3D"margin:0=\n'
    b' 0 16px"><a href=3D"https://" style=3D"color:#ffffff;background:#1a73e8;tex=\n'
    b't-decoration:none;padding:12px 20px;border-radius:4px;font-weight:bold"><im=\n'
    b'g src=3D"https://" alt=3D"" width=3D"" height=3D"" style=3D"display:block;b=\n'
    b'order:0"></a></p></div></td></tr></table></body></html>\n'
    b'<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initi'
    b'al-scale=1"></head><body style="margin:0;padding:0"><table role="presentation" width="100%'
    b'" cellpadding="0" cellspacing="0" border="0"><tr><td align="center"><div style="max-width:'
    b"600px;margin:0 auto;font-family:Helvetica,Arial,sans-serif;font-size:14px;line-height:1.5;"
    b'color:#333333"><h1 style="font-size:20px"><p style="margin:0 0 16px"><a href="https://" st'
    b'yle="color:#ffffff;background:#1a73e8;text-decoration:none;padding:12px 20px;border-radius'
    b':4px;font-weight:bold"><img src="https://" alt="" width="" height="" style="display:block;'
    b'border:0"></a></p></div></td></tr></table></body></html>\n'
    b'</p><p><a href=3D"https://=\n'
    b'" style=3D"color:#ffffff;background-color:#=\n'
    b' text-decoration:none;"><strong></strong><br></a></p></div></body></html>=\n'
    b"Unsubscribe | View in browser | Privacy policy | Terms | Contact us | Reply to this email "
    b"| Thank you | Best regards, | Kind regards, | Hello | Hi | Dear | your account | your orde"
    b"r | password | https://www.\n"
    b'Content-Type: text/plain; charset="utf-8"\n'
    b"Content-Transfer-Encoding: 7bit\n"
    b'Content-Type: text/html; charset="utf-8"\n'
    b"Content-Transfer-Encoding: quoted-printable\n"
    b'Content-Disposition: attachment; filename="\n'
    b"Content-Type: application/pdf\n"
    b"Content-Transfer-Encoding: base64\n"
    b"Content-Type: multipart/mixed;\n"
    b' boundary="===============\n'
    b"List-Unsubscribe: <mailto:\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
    b"Reply-To: \n"
    b"Cc: \n"
    b"Date: Mon, 30 Nov 2026 12:00:00 +0000\n"
    b"Message-ID: <em_01\n"
    b"X-Petrel-Email-Id: em_01\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/alternative;\n"
    b' boundary="===============\n'
    b'Content-Type: text/plain; charset="utf-8"\n'
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"\n"
)
