"""Lessons: a teacher picks a lesson and walks its steps; each step opens a page with its inputs set."""
from explorer.views.lessons import page

page()
