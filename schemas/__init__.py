"""bestiary.schemas"""
