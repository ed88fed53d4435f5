"""bestiary.sample_archive"""
