"""Newsletters: the lists a reader is on, each left on its own.

catalogue.py  what newsletters there are (the three the site starts with, the ones an
              editor adds), their List-Id and From name
membership.py who is on which, with which choices; joining and leaving
"""
