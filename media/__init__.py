"""bestiary.media"""
