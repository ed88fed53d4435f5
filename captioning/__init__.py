"""bestiary.captioning"""
