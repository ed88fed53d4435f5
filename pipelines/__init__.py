"""bestiary.pipelines"""
